"""Step 7's fixes against the LQ image: the adaptive colour fix and the guided detail fix."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unildiff.colorfix import adaptive_color_fix, wavelet_color_fix
from unildiff.detailfix import box_mean, guided_detail_fix
from unildiff.errors import ConfigError
from unildiff.pipeline import SamplingConfig, fix_against_lq


def _psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of [-1, 1] images (peak-to-peak 2)."""
    return float(10 * torch.log10(4.0 / (image - reference).pow(2).mean()))


def _scene(size: int = 64) -> torch.Tensor:
    """A textured gt, [-1, 1], (1, 3, size, size): smooth colour gradients plus fine stripes."""
    generator = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([0.6 * x - 0.3, 0.5 * y - 0.2, 0.4 * (x * y) - 0.1])
    stripes = 0.25 * torch.sin(x * 40 + y * 13) * torch.rand(3, 1, 1, generator=generator)
    return (base + stripes).unsqueeze(0).clamp(-1, 1)


def test_adaptive_colour_fix_takes_the_lq_colours_when_the_model_only_drifted():
    gt = _scene()
    noise = 0.1 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(1))
    lq = gt + noise  # noise leaves the low frequencies where they were
    restored = gt + torch.tensor([0.06, -0.05, 0.04]).view(1, 3, 1, 1)  # denoised, with a colour drift
    fixed = adaptive_color_fix(restored, lq, tolerance=0.25, levels=3)
    assert _psnr(fixed, gt) > _psnr(restored, gt) + 3.0
    # a drift this small against the tolerance gives nearly the plain wavelet fix
    assert torch.allclose(fixed, wavelet_color_fix(restored, lq, levels=3), atol=0.01)


def test_adaptive_colour_fix_keeps_colours_the_model_changed_on_purpose():
    gt = _scene()
    lq = 0.3 * gt + 0.6  # dense haze: a large low-frequency change (mean |change| ≈ 0.6)
    restored = gt + 0.03  # dehazed, with a small drift
    fixed = adaptive_color_fix(restored, lq, tolerance=0.25, levels=3)
    assert (fixed - restored).abs().max() < 0.01
    # the plain wavelet fix hands the haze back
    assert _psnr(wavelet_color_fix(restored, lq, levels=3), gt) < _psnr(restored, gt) - 10.0


def test_adaptive_weight_limits_are_no_fix_and_the_wavelet_fix():
    restored, lq = _scene(), 0.8 * _scene() + 0.1
    assert torch.allclose(adaptive_color_fix(restored, lq, tolerance=1e-6, levels=4), restored, atol=1e-6)
    assert torch.allclose(
        adaptive_color_fix(restored, lq, tolerance=1e6, levels=4),
        wavelet_color_fix(restored, lq, levels=4),
        atol=1e-6,
    )


def test_detail_fix_drops_decoder_artifacts_an_affine_lq_does_not_explain():
    gt = _scene()
    lq = 0.4 * gt + 0.5  # haze with a constant transmission 0.4: an affine map of gt
    artifacts = 0.08 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(3))
    restored = gt + box_mean(artifacts, 1)  # dehazed, with decoder artifacts not in the LQ
    fixed = guided_detail_fix(restored, lq, radius=2, eps=1e-6)
    assert _psnr(fixed, gt) > _psnr(restored, gt) + 4.0


def test_detail_fix_shrinks_independent_noise_like_a_wiener_filter():
    gt = _scene()
    lq = gt + 0.2 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(2))
    fixed = guided_detail_fix(gt, lq, radius=2, eps=1e-4)  # a perfect pilot estimate
    assert _psnr(fixed, gt) > _psnr(lq, gt) + 6.0


def test_box_mean_is_the_window_mean():
    image = torch.arange(25.0).view(1, 1, 5, 5)
    assert box_mean(image, 1)[0, 0, 2, 2] == image[0, 0, 1:4, 1:4].mean()
    assert box_mean(image, 1).shape == image.shape


def test_fix_against_lq_is_a_clamp_when_both_fixes_are_off():
    restored = 1.5 * _scene()
    lq = _scene()
    config = SamplingConfig(color_fix="none", detail_fix_radius=0)
    assert torch.equal(fix_against_lq(restored, lq, config), restored.clamp(-1, 1))
    on = SamplingConfig(color_fix="adaptive", color_fix_levels=3, detail_fix_radius=2)
    expected = guided_detail_fix(adaptive_color_fix(restored.clamp(-1, 1), lq, 0.25, 3), lq, 2, 1e-4)
    assert torch.equal(fix_against_lq(restored, lq, on), expected)


def test_wide_radius_only_where_the_model_moved_the_colours():
    gt = _scene()
    hazy = 0.3 * gt + 0.6  # the model moved the low frequencies on purpose: the wide radius applies
    noisy = gt + 0.1 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(4))
    restored = gt + 0.02
    narrow = SamplingConfig(color_fix="adaptive", color_fix_levels=3, detail_fix_radius=1)
    wide = dataclasses.replace(narrow, detail_fix_wide_radius=8)
    for lq, expected_radius in ((hazy, 8), (noisy, 1)):
        colour = adaptive_color_fix(restored, lq, 0.25, 3)
        expected = guided_detail_fix(colour, lq, expected_radius, 1e-4)
        assert torch.equal(fix_against_lq(restored, lq, wide), expected)
    # per image in a batch
    batch = fix_against_lq(torch.cat([restored, restored]), torch.cat([hazy, noisy]), wide)
    assert torch.equal(batch[:1], fix_against_lq(restored, hazy, wide))
    assert torch.allclose(batch[1:], fix_against_lq(restored, noisy, narrow), atol=1e-6)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("color_fix", "auto"),
        ("color_fix_levels", 0),
        ("color_fix_tolerance", 0.0),
        ("detail_fix_radius", -1),
        ("detail_fix_eps", 0.0),
        ("detail_fix_wide_radius", -1),
    ],
)
def test_bad_fix_settings_name_the_param(field: str, value):
    with pytest.raises(ConfigError, match=f"sampling.{field}"):
        SamplingConfig(**{field: value})
