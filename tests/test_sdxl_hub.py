"""``prior.sdxl_path`` as a hub id: downloaded through huggingface_hub's cache, or refused in one line.

The network is never reached: ``snapshot_download`` is replaced, or the hub is switched off with
``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub.errors import LocalEntryNotFoundError

from tests.smoke_repo import REPO_ROOT
from unildiff.errors import ConfigError
from unildiff.models.config import PriorConfig
from unildiff.models.prior import build_tiny_prior, load_prior, save_prior
from unildiff.params import read_params
from unildiff.training import sdxl
from unildiff.training.sdxl import HUB_FILES, is_hub_id, link_sdxl_prior

REPO_ID = "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.fixture(scope="module")
def saved_prior(tmp_path_factory) -> Path:
    """A tiny prior in the diffusers SDXL layout (what a hub snapshot holds)."""
    folder = tmp_path_factory.mktemp("prior") / "sdxl"
    save_prior(build_tiny_prior(PriorConfig(), seed=0), folder)
    return folder


def _hub_cache_snapshot(source: Path, cache: Path) -> Path:
    """Lay ``source`` out as the hub cache does: snapshot files are relative symlinks to blobs."""
    blobs, snapshot = cache / "blobs", cache / "snapshots" / "0123abc"
    blobs.mkdir(parents=True)
    for index, file in enumerate(sorted(path for path in source.rglob("*") if path.is_file())):
        blob = blobs / f"blob{index}"
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_hub_id_shape():
    assert is_hub_id(REPO_ID) and is_hub_id("owner/name")
    for value in ("", "name", "/abs/dir", "./dir", "../dir", "a/b/c", "owner/", "~/x", "dir/"):
        assert not is_hub_id(value), value


def test_hub_id_is_downloaded_then_linked_from_the_cache(saved_prior, tmp_path, monkeypatch):
    snapshot = _hub_cache_snapshot(saved_prior, tmp_path / "hub" / "models--owner--name")
    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_download)
    linked = link_sdxl_prior("owner/name", tmp_path / "models" / "prior")
    assert [repo_id for repo_id, _ in calls] == ["owner/name"]
    patterns = calls[0][1]["allow_patterns"]
    assert "model_index.json" in patterns and "unet/diffusion_pytorch_model.safetensors" in patterns
    assert not any("fp16" in pattern or pattern.endswith(".bin") for pattern in patterns)
    shutil.rmtree(tmp_path / "hub")  # real files were linked, not the cache's relative symlinks
    assert not any(path.is_symlink() for path in linked.rglob("*"))
    assert load_prior(linked).unet.config.in_channels == 16


def test_every_file_of_a_saved_prior_is_in_the_download_patterns(saved_prior):
    from fnmatch import fnmatch

    for file in saved_prior.rglob("*"):
        if file.is_file():
            name = file.relative_to(saved_prior).as_posix()
            assert any(fnmatch(name, pattern) for pattern in HUB_FILES), name


def test_unreachable_hub_is_one_line_saying_what_to_pass(tmp_path, monkeypatch):
    def offline(repo_id, **kwargs):
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the files on the Hub and we cannot find them in "
            "the local cache.\nPlease check your connection."
        )

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    with pytest.raises(ConfigError) as raised:
        link_sdxl_prior(REPO_ID, tmp_path / "prior")
    message = str(raised.value)
    assert "\n" not in message
    assert f"prior.sdxl_path={REPO_ID}" in message and "local diffusers SDXL directory" in message
    assert "LocalEntryNotFoundError" in message
    assert not (tmp_path / "prior").exists()


def test_missing_path_that_is_no_hub_id_is_named_without_a_download(tmp_path, monkeypatch):
    def must_not_download(repo_id, **kwargs):
        raise AssertionError("a path must not be looked up on the hub")

    monkeypatch.setattr(sdxl, "download_hub_prior", must_not_download)
    for value in (tmp_path / "no" / "such" / "dir", "./sdxl-base"):
        with pytest.raises(ConfigError, match=r"prior\.sdxl_path=.*no such directory, and not a hub id"):
            link_sdxl_prior(value, tmp_path / "prior")
    (tmp_path / "file.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a file"):
        link_sdxl_prior(tmp_path / "file.safetensors", tmp_path / "prior")
    assert not (tmp_path / "prior").exists()


def test_prior_stage_offline_with_a_hub_id_exits_with_one_line(tmp_path):
    """The stage itself (what `dvc repro` runs): no FileNotFoundError traceback, exit 1, one error line."""
    params = read_params(REPO_ROOT / "params.yaml")
    params["prior"] = {"preset": "sdxl", "sdxl_path": REPO_ID}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    environment = dict(
        os.environ,
        HF_HUB_OFFLINE="1",  # huggingface_hub refuses before any connection
        HF_HOME=str(tmp_path / "hf"),
        PYTHONPATH=str(REPO_ROOT),
    )
    completed = subprocess.run(
        [sys.executable, "-m", "stages.prior"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert f"prior.sdxl_path={REPO_ID}" in errors[0] and "local diffusers SDXL directory" in errors[0]
    assert not (tmp_path / "models" / "prior").exists()
