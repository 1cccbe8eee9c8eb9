"""A random-weight model of SDXL's sizes, for GPU timings where SDXL weights are not at hand.

The UNet, VAE and text encoders use the published configurations of
``stabilityai/stable-diffusion-xl-base-1.0`` (2.6 B UNet parameters); DAFF and DAEM use the ``sdxl``
preset's settings (:data:`SDXL_DAFF`, :data:`SDXL_DAEM`). Speed does not depend on the weights' values,
so the numbers transfer; the restorations are noise.
"""

from __future__ import annotations

from typing import Any

import torch

from unildiff.models.config import DAEMConfig, DAFFConfig

#: The ``sdxl`` preset's DAFF and DAEM sizes (``presets/sdxl.yaml`` over ``params.yaml``; the test of
#: the SDXL-size export checks them against the preset): the config defaults, f^LQ at the VAE encoder's
#: three coarsest resolutions (H/8, H/4, H/2), DAEM routing per 16² pixels.
SDXL_DAFF = DAFFConfig(lq_scales=3)
SDXL_DAEM = DAEMConfig(window=16)

SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "use_linear_projection": True,
    "norm_num_groups": 32,
}
SDXL_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
SDXL_TEXT: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
}
SDXL_TEXT_2: dict[str, Any] = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "projection_dim": 1280,
}
MAX_LENGTH = 77
WIDTH_DIVISORS = (1, 2, 4, 8, 16)
"""Channel divisors :func:`sdxl_unet_config` and :func:`sdxl_vae_config` accept: they divide SDXL's 32
norm groups, so every block keeps its structure (layers, attention heads, transformer depth) with fewer
channels."""


def _check_divisor(width_divisor: int) -> None:
    if width_divisor not in WIDTH_DIVISORS:
        raise ValueError(f"width divisor must be one of {WIDTH_DIVISORS}, got {width_divisor}")


def sdxl_unet_config(width_divisor: int = 1) -> dict[str, Any]:
    """SDXL's UNet config with every channel count divided by ``width_divisor`` (1: the real one).

    Blocks, layers, transformer depths and head counts stay; the head width (64) and the text widths
    (2048 cross-attention, 1280 pooled, 256 per time id) shrink with the channels.
    """
    _check_divisor(width_divisor)
    if width_divisor == 1:
        return dict(SDXL_UNET)
    time_dim = SDXL_UNET["addition_time_embed_dim"] // width_divisor
    return dict(
        SDXL_UNET,
        block_out_channels=tuple(c // width_divisor for c in SDXL_UNET["block_out_channels"]),
        cross_attention_dim=SDXL_UNET["cross_attention_dim"] // width_divisor,
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=SDXL_TEXT_2["projection_dim"] // width_divisor + 6 * time_dim,
        norm_num_groups=SDXL_UNET["norm_num_groups"] // width_divisor,
    )


def sdxl_vae_config(width_divisor: int = 1) -> dict[str, Any]:
    """SDXL's VAE config with every channel count divided by ``width_divisor`` (1: the real one)."""
    _check_divisor(width_divisor)
    return dict(
        SDXL_VAE,
        block_out_channels=tuple(c // width_divisor for c in SDXL_VAE["block_out_channels"]),
        norm_num_groups=SDXL_VAE["norm_num_groups"] // width_divisor,
    )


def build_sdxl_size_model(
    device: str = "cpu", unet=None, vae=None, text=None, text_2=None, max_length=MAX_LENGTH
):
    """A ``UniLDiffModel`` with random weights of SDXL's sizes (overrides shrink it for tests).

    Args:
        device: where the weights are created (``cuda`` avoids a slow CPU initialisation).
        unet: UNet config (default :data:`SDXL_UNET`).
        vae: VAE config (default :data:`SDXL_VAE`).
        text: first text encoder sizes (default CLIP ViT-L).
        text_2: second text encoder sizes (default OpenCLIP ViT-bigG).
        max_length: tokenizer length.
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from unildiff.models.bundle import build_model
    from unildiff.models.config import SDXL_SCHEDULER
    from unildiff.models.prior import PriorComponents
    from unildiff.models.tokenizer import build_byte_level_tokenizer, byte_level_vocab

    vocab = byte_level_vocab()

    def text_config(sizes):
        return CLIPTextConfig(
            vocab_size=len(vocab),
            max_position_embeddings=max_length,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
            hidden_act="gelu",
            **sizes,
        )

    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        prior = PriorComponents(
            vae=AutoencoderKL(**(vae or SDXL_VAE)),
            unet=UNet2DConditionModel(**(unet or SDXL_UNET)),
            text_encoder=CLIPTextModel(text_config(text or SDXL_TEXT)),
            text_encoder_2=CLIPTextModelWithProjection(text_config(text_2 or SDXL_TEXT_2)),
            tokenizer=build_byte_level_tokenizer(max_length),
            tokenizer_2=build_byte_level_tokenizer(max_length),
            scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        )
        model = build_model(prior, SDXL_DAFF, SDXL_DAEM)
    for module in (
        prior.vae,
        prior.unet,
        prior.text_encoder,
        prior.text_encoder_2,
        model.lq_encoder,
        model.daff,
        model.decoder,
    ):
        module.eval()
    return model
