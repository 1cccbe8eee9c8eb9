"""Local DAEM routing (``daem.window`` > 0): the router decides per window, the load-balancing loss counts
every routed token, and a small decoder trained on images whose halves carry different degradations routes
the halves differently, which one global route (window 0) cannot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from unildiff.models.conditioner import encode_with_skips
from unildiff.models.config import DAEMConfig
from unildiff.models.decoder import DAEMDecoder, block_router_window
from unildiff.models.load_balancing import load_balancing_loss
from unildiff.training.batches import LatentBatch
from unildiff.training.objectives import DecoderObjective
from unildiff.training.stage2 import SkipEncoder

SIZE = 16  # image side
SEPARATION = 0.25  # |P(expert 1 | left half) - P(expert 1 | right half)|, mean over images


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return (
        AutoencoderKL(
            block_out_channels=(8, 8),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            mid_block_add_attention=False,
        )
        .eval()
        .requires_grad_(False)
    )


def _two_halves(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """lq, gt [-1, 1] (count, 3, SIZE, SIZE): smooth gt; the lq's left half noisy, its right half dark."""
    base = torch.rand(count, 3, 4, 4, generator=generator) * 1.6 - 0.8
    gt = F.interpolate(base, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    lq, half = gt.clone(), SIZE // 2
    noise = 0.5 * torch.randn(gt[..., :half].shape, generator=generator)
    lq[..., :half] = (gt[..., :half] + noise).clamp(-1, 1)
    lq[..., half:] = 0.2 * (gt[..., half:] + 1) - 1
    return lq, gt


def _half_separation(decoder: DAEMDecoder, vae: AutoencoderKL) -> float:
    """Mean over held-out images of |share of expert 1 in the left half - in the right half|."""
    lq, _ = _two_halves(32, torch.Generator().manual_seed(99))
    block, captured = decoder.daem_blocks["1"], {}
    handle = block.register_forward_hook(lambda module, args, output: captured.update(selected=output[3]))
    with torch.no_grad():
        latents, skips = encode_with_skips(vae, lq)
        decoder.eval()(latents, skips)
    handle.remove()
    _, experts, rows, cols = block.router_shape(torch.zeros(len(lq), 1, SIZE, SIZE))
    choice = captured["selected"].reshape(len(lq), rows, cols, experts).argmax(-1).float()
    per_pixel = F.interpolate(choice[:, None], size=(SIZE, SIZE), mode="nearest")[:, 0]
    left = per_pixel[..., : SIZE // 2].flatten(1).mean(1)
    right = per_pixel[..., SIZE // 2 :].flatten(1).mean(1)
    return (left - right).abs().mean().item()


@pytest.mark.parametrize("window", [4, 0])
def test_trained_local_routing_separates_the_two_halves_and_one_global_route_cannot(window):
    vae = _vae()
    config = DAEMConfig(num_experts=2, top_k=1, window=window, up_blocks=(1,))
    decoder = DAEMDecoder.from_vae(vae, config, seed=0)
    decoder.decoder.requires_grad_(False)  # train the DAEM block (the router and the experts)
    decoder.post_quant_conv.requires_grad_(False)
    before = _half_separation(decoder, vae)
    objective = DecoderObjective(decoder, SkipEncoder(vae), lambda1=0.2, lambda2=0.01)  # stage 2's eq. 10
    optimizer = torch.optim.Adam([p for p in decoder.parameters() if p.requires_grad], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for step in range(40):
        decoder.train()
        lq, gt = _two_halves(8, generator)
        with torch.no_grad():
            latents = encode_with_skips(vae, gt)[0]
        batch = LatentBatch(lq, gt, latents, torch.zeros(8, dtype=torch.long))
        output = objective(batch, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    after = _half_separation(decoder, vae)
    if window:
        assert after > SEPARATION, (before, after)
        assert after > before + 0.15, (before, after)  # the training, not the initialisation, split them
    else:  # one route per image: both halves always share it, so the same check fails
        assert after == 0.0 and not after > SEPARATION


@pytest.mark.parametrize(("window", "expected"), [(0, (0, 0)), (1, (1, 1)), (2, (1, 2)), (8, (4, 8))])
def test_the_window_is_in_output_pixels_and_one_routes_per_token(window, expected):
    assert (block_router_window(window, 1), block_router_window(window, 0)) == expected


@pytest.mark.parametrize("window", [1, 4])
def test_the_load_balancing_loss_counts_every_routed_token(window):
    vae = _vae()
    decoder = DAEMDecoder.from_vae(vae, DAEMConfig(num_experts=3, window=window, up_blocks=(0, 1)), seed=0)
    decoder.train()
    lq, _ = _two_halves(2, torch.Generator().manual_seed(1))
    outputs = {}
    handles = [
        block.register_forward_hook(lambda module, args, output, name=name: outputs.update({name: output}))
        for name, block in decoder.daem_blocks.items()
    ]
    latents, skips = encode_with_skips(vae, lq)
    result = decoder(latents, skips, routing_generator=torch.Generator().manual_seed(0))
    for handle in handles:
        handle.remove()
    expected_losses = []
    for name, (out, clean, noisy, selected) in outputs.items():
        block = decoder.daem_blocks[name]
        side = out.shape[-1]
        tokens_per_side = -(-side // block.window)
        assert clean.shape == noisy.shape == selected.shape == (2 * tokens_per_side**2, 3)
        expected_losses.append(load_balancing_loss(clean, noisy, 1 / 3, 1))
    if window == 1:  # per token: one router decision per feature position of every block
        assert all(block.window == 1 for block in decoder.daem_blocks.values())
    torch.testing.assert_close(result.aux_loss, torch.stack(expected_losses).mean())
    assert result.expert_usage.sum().item() == pytest.approx(1.0)
