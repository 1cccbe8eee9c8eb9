"""Colour fixes for the colour shift diffusion restorers show: match the restored colours to the LQ input.

- ``adain``: per-channel mean and standard deviation of the restored image set to those of the LQ image.
- ``wavelet``: keep the restored image's high frequencies and take the low frequencies (the colour)
  from the LQ image, with a dilated à-trous wavelet decomposition (as in StableSR).
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional

from unildiff.errors import ConfigError

COLOR_FIXES = ("none", "wavelet", "adain")
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


def apply_color_fix(method: str, restored: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """Apply the colour fix named ``method`` (one of :data:`COLOR_FIXES`); tensors [-1, 1], (B, 3, H, W)."""
    if method == "none":
        return restored
    if method == "wavelet":
        return wavelet_color_fix(restored, lq)
    if method == "adain":
        return adain_color_fix(restored, lq)
    raise ConfigError(f"unknown sampling.color_fix {method!r} (valid: {', '.join(COLOR_FIXES)})")
