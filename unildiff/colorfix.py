"""Colour fixes for the colour shift diffusion restorers show: match the restored colours to the LQ input.

- ``adain``: per-channel mean and standard deviation of the restored image set to those of the LQ image.
- ``wavelet``: keep the restored image's high frequencies and take the low frequencies (the colour)
  from the LQ image, with a dilated à-trous wavelet decomposition (as in StableSR).
- ``adaptive``: the wavelet fix weighted by how far the restoration moved the image's low frequencies:
  a restorer that changed them on purpose (haze, low light) keeps its own, one that only drifted (the
  tiny VAE's colour error on noise and rain) gets the LQ's (tiny only; docs/evaluation.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional

from unildiff.errors import ConfigError

COLOR_FIXES = ("none", "wavelet", "adain", "adaptive")
"""Valid values of ``sampling.color_fix``."""


def adain_color_fix(restored: torch.Tensor, lq: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Match each channel's mean and standard deviation of ``restored`` to ``lq``.

    Args:
        restored: [-1, 1], (B, 3, H, W).
        lq: [-1, 1], (B, 3, H, W) (any spatial size: only its statistics are used).
        eps: added to the standard deviation.

    Returns:
        [-1, 1], (B, 3, H, W).
    """
    restored_mean = restored.mean(dim=(-2, -1), keepdim=True)
    restored_std = restored.std(dim=(-2, -1), keepdim=True) + eps
    lq_mean = lq.mean(dim=(-2, -1), keepdim=True)
    lq_std = lq.std(dim=(-2, -1), keepdim=True) + eps
    return ((restored - restored_mean) / restored_std * lq_std + lq_mean).clamp(-1.0, 1.0)


def _wavelet_blur(image: torch.Tensor, radius: int) -> torch.Tensor:
    """3×3 binomial blur dilated by ``radius`` (replicate padding)."""
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=image.dtype) / 16.0
    channels = image.shape[1]
    kernel = kernel.to(image.device)[None, None].repeat(channels, 1, 1, 1)
    padded = functional.pad(image, (radius, radius, radius, radius), mode="replicate")
    return functional.conv2d(padded, kernel, groups=channels, dilation=radius)


def wavelet_decomposition(image: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``image`` (B, C, H, W) into (high frequencies, low frequencies); their sum is the image."""
    high = torch.zeros_like(image)
    low = image
    for level in range(levels):
        radius = 2**level
        if radius >= min(image.shape[-2:]):
            break
        blurred = _wavelet_blur(low, radius)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(restored: torch.Tensor, lq: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Keep the high frequencies of ``restored`` and the low frequencies (colour) of ``lq``.

    Args:
        restored: [-1, 1], (B, 3, H, W).
        lq: [-1, 1], (B, 3, H, W), the same size as ``restored``.
        levels: wavelet levels.

    Returns:
        [-1, 1], (B, 3, H, W).
    """
    restored_high, _ = wavelet_decomposition(restored, levels)
    _, lq_low = wavelet_decomposition(lq, levels)
    return (restored_high + lq_low).clamp(-1.0, 1.0)


def adaptive_color_fix(
    restored: torch.Tensor, lq: torch.Tensor, tolerance: float, levels: int = 5
) -> torch.Tensor:
    """The wavelet fix, weighted per image by how far the restoration moved the low frequencies.

    With ``low``/``high`` the wavelet split, ``d`` the mean over pixels and channels of
    ``|low(restored) − low(lq)|`` and ``w = exp(−(d / tolerance)²)``::

        out = high(restored) + w · low(lq) + (1 − w) · low(restored)

    A dehazed or brightened image (``d`` ≫ ``tolerance``) keeps its own low frequencies; a denoised or
    derained one, whose low frequencies moved only by the decoder's colour drift, takes the LQ's.

    Args:
        restored: [-1, 1], (B, 3, H, W).
        lq: [-1, 1], (B, 3, H, W), the same size as ``restored``.
        tolerance: the low-frequency change (in [-1, 1] units) at which the weight has fallen to 1/e.
        levels: wavelet levels (the low band keeps structures above about ``2**levels`` pixels).

    Returns:
        [-1, 1], (B, 3, H, W).
    """
    return adaptive_color_fix_with_weight(restored, lq, tolerance, levels)[0]


def adaptive_color_fix_with_weight(
    restored: torch.Tensor, lq: torch.Tensor, tolerance: float, levels: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`adaptive_color_fix` and the weight ``w`` it gave the LQ, (B, 1, 1, 1), from one wavelet split.

    The pipeline's step 7 reads ``w`` again to choose the detail fix's radius; returning it saves
    decomposing both images a second time (about 0.8 s a megapixel on one CPU thread).
    """
    restored_high, restored_low = wavelet_decomposition(restored, levels)
    _, lq_low = wavelet_decomposition(lq, levels)
    weight = _lq_colour_weight(restored_low, lq_low, tolerance)
    fixed = (restored_high + weight * lq_low + (1.0 - weight) * restored_low).clamp(-1.0, 1.0)
    return fixed, weight


def _lq_colour_weight(restored_low: torch.Tensor, lq_low: torch.Tensor, tolerance: float) -> torch.Tensor:
    """``exp(−(d / tolerance)²)``, ``d`` the mean |restored_low − lq_low| of each image, (B, 1, 1, 1)."""
    change = (restored_low - lq_low).abs().mean(dim=(1, 2, 3), keepdim=True)
    return torch.exp(-((change / tolerance) ** 2))


def lq_colour_weight(
    restored: torch.Tensor, lq: torch.Tensor, tolerance: float, levels: int = 5
) -> torch.Tensor:
    """The weight :func:`adaptive_color_fix` gives the LQ's low frequencies, per image, (B, 1, 1, 1).

    Near 1: the restoration left the low frequencies where the LQ has them (noise, rain); near 0: it
    moved them on purpose (haze, low light). Images [-1, 1], (B, 3, H, W).
    """
    _, restored_low = wavelet_decomposition(restored, levels)
    _, lq_low = wavelet_decomposition(lq, levels)
    return _lq_colour_weight(restored_low, lq_low, tolerance)


def apply_color_fix(
    method: str, restored: torch.Tensor, lq: torch.Tensor, levels: int = 5, tolerance: float = 0.25
) -> torch.Tensor:
    """Apply the colour fix named ``method`` (one of :data:`COLOR_FIXES`).

    Args:
        method: ``none``, ``wavelet``, ``adain`` or ``adaptive``.
        restored: [-1, 1], (B, 3, H, W).
        lq: [-1, 1], (B, 3, H, W), the same size as ``restored``.
        levels: wavelet levels of ``wavelet`` and ``adaptive``.
        tolerance: the low-frequency change of ``adaptive`` (see :func:`adaptive_color_fix`).

    Returns:
        [-1, 1], (B, 3, H, W).
    """
    if method == "none":
        return restored
    if method == "wavelet":
        return wavelet_color_fix(restored, lq, levels)
    if method == "adain":
        return adain_color_fix(restored, lq)
    if method == "adaptive":
        return adaptive_color_fix(restored, lq, tolerance, levels)
    raise ConfigError(f"unknown sampling.color_fix {method!r} (valid: {', '.join(COLOR_FIXES)})")
