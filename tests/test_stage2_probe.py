"""research/stage2_probe.py's decoder variants: each starts as the decoder it modifies."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

from unildiff.models.conditioner import encode_with_skips
from unildiff.models.config import DAEMConfig, PriorConfig
from unildiff.models.decoder import DAEMDecoder
from unildiff.models.prior import build_tiny_prior

SCRIPT = Path(__file__).resolve().parents[1] / "research" / "stage2_probe.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("stage2_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _options(**overrides) -> argparse.Namespace:
    options = {"expert_residual_init": None, "shared_bias_init": None, "decoded_image_block": False}
    return argparse.Namespace(**{**options, **overrides})


def test_every_variant_starts_as_the_plain_decoder_and_the_image_block_then_learns():
    probe = _load_script()
    prior = build_tiny_prior(PriorConfig(), seed=0)
    daem = DAEMConfig(num_experts=2, top_k=1, window=0, up_blocks=(1, 2))
    lq = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents, skips = encode_with_skips(prior.vae, lq)
        reference = DAEMDecoder.from_vae(prior.vae, DAEMConfig(up_blocks=()))(latents, skips).sample
    variants = [
        _options(),
        _options(expert_residual_init=1.0, shared_bias_init=1.0),
        _options(decoded_image_block=True),
    ]
    for options in variants:
        decoder = probe.make_decoder(prior, daem, options, seed=0).eval()
        with torch.no_grad():
            torch.testing.assert_close(decoder(latents, skips).sample, reference)
    block = decoder.daem_blocks
    assert set(block) == {"lift", "block", "head"} and decoder.config["decoded_image_block"]
    assert torch.equal(block["block"].experts[0].beta, torch.zeros_like(block["block"].experts[0].beta))
    # The zero-initialised head gets a gradient at once, so the block is trainable from the start.
    decoder.train()
    decoder(latents, skips, torch.Generator().manual_seed(1)).sample.square().mean().backward()
    assert block["head"].weight.grad.abs().sum() > 0
