"""The latent-diffusion prior: SDXL's component set, either the ``tiny`` preset built here or a real SDXL.

Both presets give one :class:`PriorComponents` with the layout of a diffusers SDXL directory::

    vae/ unet/ text_encoder/ text_encoder_2/ tokenizer/ tokenizer_2/ scheduler/ model_index.json

The ``tiny`` text encoders are random and frozen: they only need to give distinct, fixed embeddings
per prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from unildiff.errors import ConfigError, MissingArtifactError
from unildiff.models.config import SDXL_SCHEDULER, TINY, PriorConfig
from unildiff.models.tokenizer import build_byte_level_tokenizer, byte_level_vocab
from unildiff.utils.atomic import atomic_dir, atomic_write_json

#: The DVC stage that writes models/prior.
PRIOR_STAGE = "prior"

COMPONENTS = ("vae", "unet", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")

#: model_index.json of a diffusers SDXL directory (what ``StableDiffusionXLPipeline`` writes).
MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "force_zeros_for_empty_prompt": True,
    "vae": ["diffusers", "AutoencoderKL"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
}


@dataclass
class PriorComponents:
    """The seven components of an SDXL-style prior (the same fields for ``tiny`` and ``sdxl``)."""

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection
    tokenizer: CLIPTokenizer
    tokenizer_2: CLIPTokenizer
    scheduler: EulerDiscreteScheduler


def _tiny_text_config(sizes: dict, max_length: int) -> CLIPTextConfig:
    vocab = byte_level_vocab()
    return CLIPTextConfig(
        vocab_size=len(vocab),
        max_position_embeddings=max_length,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        hidden_act="quick_gelu",
        **sizes,
    )


def build_tiny_prior(config: PriorConfig, seed: int) -> PriorComponents:
    """Build the random ``tiny`` prior (sizes in :data:`unildiff.models.config.TINY`), seeded, in eval mode.

    Args:
        config: Prior settings; ``config.preset`` must be ``tiny``.
        seed: Seed of the weight initialisation (the same seed gives the same weights).
    """
    if config.preset != "tiny":
        raise ConfigError(f"build_tiny_prior needs prior.preset=tiny, got {config.preset!r}")
    max_length = TINY["max_length"]
    text_config = _tiny_text_config(TINY["text_encoder"], max_length)
    text_config_2 = _tiny_text_config(TINY["text_encoder_2"], max_length)
    unet_sizes = dict(TINY["unet"])
    unet_sizes["cross_attention_dim"] = text_config.hidden_size + text_config_2.hidden_size
    # SDXL's added conditioning: 6 time ids embedded with addition_time_embed_dim each, plus the pooled text.
    unet_sizes["projection_class_embeddings_input_dim"] = (
        6 * unet_sizes["addition_time_embed_dim"] + text_config_2.projection_dim
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**TINY["vae"])
        unet = UNet2DConditionModel(**unet_sizes)
        text_encoder = CLIPTextModel(text_config)
        text_encoder_2 = CLIPTextModelWithProjection(text_config_2)
    for module in (vae, unet, text_encoder, text_encoder_2):
        module.eval()
    return PriorComponents(
        vae=vae,
        unet=unet,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=build_byte_level_tokenizer(max_length),
        tokenizer_2=build_byte_level_tokenizer(max_length),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
    )


def build_prior(config: PriorConfig, seed: int) -> PriorComponents:
    """The prior a config asks for: :func:`build_tiny_prior` for ``tiny``, :func:`load_prior` for ``sdxl``."""
    if config.preset == "tiny":
        return build_tiny_prior(config, seed)
    return load_prior(config.sdxl_path)


def save_prior(prior: PriorComponents, path: str | Path) -> Path:
    """Write ``prior`` atomically in the diffusers SDXL layout (safetensors weights + model_index.json)."""
    path = Path(path)
    with atomic_dir(path) as temporary:
        for name in COMPONENTS:
            component = getattr(prior, name)
            if name.startswith("tokenizer") or name == "scheduler":
                component.save_pretrained(temporary / name)
            else:
                component.save_pretrained(temporary / name, safe_serialization=True)
        atomic_write_json(
            temporary / "model_index.json", {**MODEL_INDEX, "_diffusers_version": diffusers.__version__}
        )
    return path


def _check_layout(path: Path) -> None:
    if not (path / "model_index.json").is_file():
        raise MissingArtifactError(f"prior directory {path} has no model_index.json (not a diffusers layout)")
    for name in COMPONENTS:
        if not (path / name).is_dir():
            raise MissingArtifactError(f"prior directory {path} lacks the {name}/ component")
    index = json.loads((path / "model_index.json").read_text())
    for name in COMPONENTS:
        if name not in index or not index[name] or index[name][0] is None:
            raise ConfigError(f"{path / 'model_index.json'} declares no {name} component")


def _load_component(cls, root: str, name: str, local: bool):
    kwargs = {"use_safetensors": True} if name in ("vae", "unet", "text_encoder", "text_encoder_2") else {}
    try:
        if local:
            return cls.from_pretrained(str(Path(root) / name), **kwargs)
        return cls.from_pretrained(root, subfolder=name, **kwargs)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MissingArtifactError(
            f"cannot load the {name} component of prior {root}: {first_line}"
        ) from None


def load_prior(path: str | Path) -> PriorComponents:
    """Load a prior saved by :func:`save_prior` or a diffusers SDXL directory (or a hub id where allowed).

    Weights are read from safetensors only. A missing component raises an error naming it.
    """
    local = Path(path).is_dir()
    if local:
        _check_layout(Path(path))
    elif str(path).count("/") != 1 or str(path).startswith((".", "/", "~")):
        raise MissingArtifactError(f"prior directory {path} does not exist (run `dvc repro {PRIOR_STAGE}`)")
    root = str(path)
    prior = PriorComponents(
        vae=_load_component(AutoencoderKL, root, "vae", local),
        unet=_load_component(UNet2DConditionModel, root, "unet", local),
        text_encoder=_load_component(CLIPTextModel, root, "text_encoder", local),
        text_encoder_2=_load_component(CLIPTextModelWithProjection, root, "text_encoder_2", local),
        tokenizer=_load_component(CLIPTokenizer, root, "tokenizer", local),
        tokenizer_2=_load_component(CLIPTokenizer, root, "tokenizer_2", local),
        scheduler=_load_component(EulerDiscreteScheduler, root, "scheduler", local),
    )
    for module in (prior.vae, prior.unet, prior.text_encoder, prior.text_encoder_2):
        module.eval()
    return prior
