"""The ``sdxl`` preset through DVC itself: ``dvc exp run -S prior.preset=sdxl -S prior.sdxl_path=DIR``.

DIR is a small directory in the diffusers SDXL layout with SDXL's own wiring, unlike the ``tiny`` prior
the other tests build: an 8x VAE (4 down blocks) with 4 latent channels, a 3-level UNet whose last two
levels cross-attend (two transformer layers in the deepest), and two text encoders of different widths
(24 and 40, so the UNet cross-attends to 64 channels). It runs the data stages, ``prior`` (which trains
nothing and links DIR), ``encode_latents`` and ``stage1a`` on a copy of the session's smoke run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import copy_pipeline
from tests.smoke_repo import run
from unildiff.training.latent_shards import ShardedLatentCache

pytestmark = pytest.mark.slow

TEXT_MAX_LENGTH = 16


def build_sdxl_layout(root: Path) -> Path:
    """Write a random SDXL-wired prior, a few MB, to ``root`` (model_index.json + the seven components)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from unildiff.models.config import SDXL_SCHEDULER
    from unildiff.models.prior import PriorComponents, save_prior
    from unildiff.models.tokenizer import build_byte_level_tokenizer, byte_level_vocab

    vocab = byte_level_vocab()

    def text_config(width: int, layers: int, heads: int, projection: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(vocab),
            max_position_embeddings=TEXT_MAX_LENGTH,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            projection_dim=projection,
            hidden_act="gelu",
        )

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=64,
        scaling_factor=0.13025,
    )
    text_encoder = CLIPTextModel(text_config(24, 1, 2, 24))
    text_encoder_2 = CLIPTextModelWithProjection(text_config(40, 2, 4, 40))
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=(2, 4, 4),
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=24 + 40,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 40,
        use_linear_projection=True,
    )
    prior = PriorComponents(
        vae=vae,
        unet=unet,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=build_byte_level_tokenizer(TEXT_MAX_LENGTH),
        tokenizer_2=build_byte_level_tokenizer(TEXT_MAX_LENGTH),
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
    )
    return save_prior(prior, root)


def test_sdxl_preset_runs_the_prior_and_training_stages_through_dvc(
    smoke_pipeline: Path, tmp_path: Path
) -> None:
    sdxl = build_sdxl_layout(tmp_path / "sdxl-small")
    repo = copy_pipeline(smoke_pipeline, tmp_path / "repo")
    preset = ["-S", "prior.preset=sdxl", "-S", f"prior.sdxl_path={sdxl}"]
    completed = run(["dvc", "exp", "run", *preset, "stage1a"], repo)
    ran = set(re.findall(r"Running stage '([^']+)'", completed.stdout))
    assert ran == {"prior", "encode_latents", "stage1a"}  # the data stages read no prior param
    status = json.loads(run(["dvc", "status", "--json", "stage1a"], repo).stdout or "{}")
    assert status == {}, status

    # models/prior is the SDXL directory, linked (same file), not a trained tiny prior.
    linked = repo / "models" / "prior" / "unet" / "diffusion_pytorch_model.safetensors"
    assert linked.read_bytes() == (sdxl / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert json.loads((repo / "models/prior/vae/config.json").read_text())["latent_channels"] == 4
    for phase in ("vae", "unet"):
        record = json.loads((repo / "dvclive" / "prior" / phase / "metrics.json").read_text())
        assert record == {"preset": "sdxl", "trained": False, "step": 0}
    assert (repo / "checkpoints" / "prior").is_dir()
    # The latent cache holds the SDXL VAE's latents: 4 channels at 1/8 of the 32-pixel smoke crops.
    latents = ShardedLatentCache(repo / "models" / "cache" / "latents").read([0]).gt_latents
    assert tuple(latents.shape[1:]) == (4, 4, 4)
    # DAFF trained on them, at the SDXL UNet's widths (its first level: 16 channels).
    daff = json.loads((repo / "models/stage1a/daff/config.json").read_text())
    assert daff["hidden_channels"] == 16 and daff["text_dim"] == 24 + 40, daff
