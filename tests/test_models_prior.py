"""Prior presets: tiny build, save/load round trip, SDXL-layout loading, prompt encoding."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from unildiff.errors import ConfigError, MissingArtifactError
from unildiff.models.config import SDXL_SCHEDULER, TINY, PriorConfig
from unildiff.models.prior import build_tiny_prior, load_prior, save_prior
from unildiff.models.text import encode_prompt, make_time_ids
from unildiff.models.tokenizer import byte_level_vocab


@pytest.fixture(scope="module")
def prior():
    return build_tiny_prior(PriorConfig(), seed=0)


def test_tiny_prior_is_seeded_and_sdxl_shaped(prior):
    again = build_tiny_prior(PriorConfig(), seed=0)
    other = build_tiny_prior(PriorConfig(), seed=1)
    weight = prior.unet.conv_in.weight
    assert torch.equal(weight, again.unet.conv_in.weight)
    assert not torch.equal(weight, other.unet.conv_in.weight)
    assert prior.unet.config.addition_embed_type == "text_time"
    assert prior.vae.config.latent_channels == prior.unet.config.in_channels == TINY["vae"]["latent_channels"]
    assert 2 ** (len(prior.vae.config.block_out_channels) - 1) == 4  # tiny: factor 4 (docs/model.md)
    assert prior.unet.config.cross_attention_dim == (
        prior.text_encoder.config.hidden_size + prior.text_encoder_2.config.hidden_size
    )


def test_encode_prompt_and_unet_forward(prior):
    embeds, pooled = encode_prompt(prior, ["remove rain", "denoise"])
    assert embeds.shape == (2, 16, prior.unet.config.cross_attention_dim)
    assert pooled.shape == (2, prior.text_encoder_2.config.projection_dim)
    assert not torch.allclose(embeds[0], embeds[1])
    again, _ = encode_prompt(prior, ["remove rain"])
    assert torch.equal(again[0], embeds[0])
    time_ids = make_time_ids(64, 48, 2)
    assert time_ids.tolist()[0] == [64, 48, 0, 0, 64, 48]
    noise_pred = prior.unet(
        torch.randn(2, prior.unet.config.in_channels, 8, 6),
        torch.tensor([10, 900]),
        embeds,
        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
    ).sample
    assert noise_pred.shape == (2, prior.unet.config.in_channels, 8, 6)


def test_save_load_round_trip_is_safetensors(prior, tmp_path):
    save_prior(prior, tmp_path / "prior")
    for name in ("vae", "unet"):
        assert (tmp_path / "prior" / name / "diffusion_pytorch_model.safetensors").is_file()
    for name in ("text_encoder", "text_encoder_2"):
        assert (tmp_path / "prior" / name / "model.safetensors").is_file()
    assert not list((tmp_path / "prior").rglob("*.bin"))
    loaded = load_prior(tmp_path / "prior")
    for name in ("vae", "unet", "text_encoder", "text_encoder_2"):
        for key, value in getattr(prior, name).state_dict().items():
            assert torch.equal(value, getattr(loaded, name).state_dict()[key]), f"{name}.{key}"
    assert loaded.scheduler.config.beta_schedule == "scaled_linear"
    first, _ = encode_prompt(prior, ["dehaze"])
    second, _ = encode_prompt(loaded, ["dehaze"])
    assert torch.equal(first, second)


def test_missing_component_is_named(prior, tmp_path):
    save_prior(prior, tmp_path / "prior")
    shutil.rmtree(tmp_path / "prior" / "text_encoder_2")
    with pytest.raises(MissingArtifactError, match="text_encoder_2"):
        load_prior(tmp_path / "prior")
    with pytest.raises(MissingArtifactError, match="does not exist"):
        load_prior(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="prior.preset"):
        build_tiny_prior(PriorConfig(preset="sd15"), 0)
    with pytest.raises(ConfigError, match="prior.sdxl_path"):
        PriorConfig(preset="sdxl")


def _write_slow_tokenizer(folder):
    """The files a real SDXL tokenizer folder holds: vocab.json, merges.txt, tokenizer_config.json."""
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(byte_level_vocab()))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<|startoftext|>"}))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": 16,
                "tokenizer_class": "CLIPTokenizer",
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        )
    )


def test_sdxl_layout_directory_loads(prior, tmp_path):
    """A directory written like stable-diffusion-xl-base-1.0 (slow tokenizer files, SDXL model_index)."""
    root = tmp_path / "sdxl"
    for name in ("vae", "unet", "text_encoder", "text_encoder_2"):
        getattr(prior, name).save_pretrained(root / name, safe_serialization=True)
    _write_slow_tokenizer(root / "tokenizer")
    _write_slow_tokenizer(root / "tokenizer_2")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "EulerDiscreteScheduler",
                "_diffusers_version": "0.19.0.dev0",
                "clip_sample": False,
                "sample_max_value": 1.0,
                "set_alpha_to_one": False,
                "skip_prk_steps": True,
                "trained_betas": None,
                **SDXL_SCHEDULER,
            }
        )
    )
    (root / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionXLPipeline",
                "_diffusers_version": "0.19.0.dev0",
                "force_zeros_for_empty_prompt": True,
                "add_watermarker": None,
                "scheduler": ["diffusers", "EulerDiscreteScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "tokenizer_2": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            }
        )
    )
    loaded = load_prior(root)
    assert type(loaded.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    reference, reference_pooled = encode_prompt(prior, ["remove rain"])
    embeds, pooled = encode_prompt(loaded, ["remove rain"])
    torch.testing.assert_close(embeds, reference)
    torch.testing.assert_close(pooled, reference_pooled)
    assert loaded.scheduler.config.timestep_spacing == "leading"
