"""The ``sdxl`` preset of the ``prior`` stage: check an SDXL prior and link it in; train nothing.

``prior.sdxl_path`` is either a local diffusers SDXL directory or a Hugging Face hub id
(``owner/name``, e.g. ``stabilityai/stable-diffusion-xl-base-1.0``). A hub id is fetched with
``huggingface_hub.snapshot_download`` into the usual Hugging Face cache (``HF_HOME``; a snapshot already
there is reused without the network), restricted to the files the pipeline reads: configs, tokenizers
and the full-precision safetensors weights. The local directory or the cached snapshot is then checked
with ``load_prior`` and hard-linked to ``models/prior``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from unildiff.errors import ConfigError
from unildiff.utils.atomic import atomic_dir

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
"""What a hub repository id looks like: ``owner/name``."""

HUB_FILES = (
    "model_index.json",
    "*/config.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "tokenizer_2/*",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.safetensors.index.json",
    "unet/diffusion_pytorch_model-*-of-*.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder_2/model.safetensors",
    "text_encoder_2/model.safetensors.index.json",
    "text_encoder_2/model-*-of-*.safetensors",
)
"""``allow_patterns`` of the download: what ``load_prior`` reads (no fp16 variants, no .bin, no ONNX)."""


def is_hub_id(value: str) -> bool:
    """Whether ``value`` has the form of a hub repository id (``owner/name``, not a relative path)."""
    return HUB_ID.fullmatch(value) is not None and value.split("/")[0] not in (".", "..")


def download_hub_prior(repo_id: str) -> Path:
    """Fetch (or reuse from the Hugging Face cache) the files of SDXL hub repository ``repo_id``.

    Returns:
        The cached snapshot folder (a diffusers SDXL directory).

    Raises:
        ConfigError: the hub is unreachable (offline, ``HF_HUB_OFFLINE=1``) and the snapshot is not
            cached, or the repository does not exist or is gated; one line saying what to pass instead.
    """
    import httpx2
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import XetDownloadError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
    except (OSError, ValueError, httpx2.HTTPError, XetDownloadError) as error:
        # OSError: unreachable or offline without a cached snapshot (LocalEntryNotFoundError), missing or
        # gated repository (HfHubHTTPError); ValueError: an id the hub refuses; httpx2: a proxy error.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"prior.sdxl_path={repo_id} is no local directory and the hub id cannot be downloaded "
            f"({type(error).__name__}: {reason}); pass a local diffusers SDXL directory instead "
            f"(e.g. from `hf download {repo_id} --local-dir DIR` where the network allows)"
        ) from None


def resolve_sdxl_path(source: str | Path) -> Path:
    """The local diffusers directory that ``prior.sdxl_path`` names, downloading a hub id first.

    Raises:
        ConfigError: ``source`` is neither an existing directory nor a hub id, or a hub id cannot be
            downloaded.
    """
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"prior.sdxl_path={source} is a file, not a diffusers SDXL directory")
    if is_hub_id(str(source)):
        return download_hub_prior(str(source))
    raise ConfigError(
        f"prior.sdxl_path={source}: no such directory, and not a hub id (owner/name); "
        "pass a local diffusers SDXL directory"
    )


def _link_or_copy(source: str, destination: str) -> None:
    # realpath: the hub cache's snapshot files are symlinks to blobs, and Linux link() would link the
    # symlink itself (relative, so dangling in models/prior) rather than the blob.
    try:
        os.link(os.path.realpath(source), destination)
    except OSError:
        shutil.copy2(source, destination)


def link_sdxl_prior(source: str | Path, destination: str | Path) -> Path:
    """Resolve ``source`` (a directory or a hub id), check it with ``load_prior``, link it to ``destination``.

    ``load_prior`` names a missing component. Files are hard-linked where the filesystem allows (no
    copy of the weights) and copied otherwise; ``destination`` is replaced atomically.

    Args:
        source: ``prior.sdxl_path``: a local diffusers SDXL directory or a hub id ``owner/name``.
        destination: ``models/prior``.

    Raises:
        ConfigError: see :func:`resolve_sdxl_path`.
        MissingArtifactError: the directory lacks a component.
    """
    from unildiff.models.prior import load_prior

    local = resolve_sdxl_path(source)
    load_prior(local)
    with atomic_dir(destination) as temporary:
        shutil.copytree(local, temporary, copy_function=_link_or_copy, dirs_exist_ok=True)
    return Path(destination)
