"""Detail fix: a local linear refinement of the restored image against the LQ image (guided filter).

The guided filter (He, Sun and Tang, TPAMI 2013) with the LQ image as the guide and the restoration as
the input fits, in every ``(2r + 1)²`` window and channel, the affine map ``a · lq + b`` closest to the
restoration, and returns the window-averaged map applied to the LQ image:

- where the LQ image is locally an affine function of the clean one (haze: ``t · gt + A (1 − t)``, low
  light), ``a ≈ 1 / t`` and the output keeps the restoration's local mean and contrast with the LQ's
  structure: decoder artifacts the LQ does not explain (the tiny VAE's blockiness) are dropped;
- where the LQ image carries independent noise, ``a = cov(lq, restored) / (var(lq) + eps)`` is the local
  Wiener gain ``var(signal) / (var(signal) + σ²)`` with the restoration as the pilot estimate (the
  second stage of BM3D), so the noise is shrunk, not copied.

It is a tiny-only step (``sampling.detail_fix_radius``; the paper has none): docs/evaluation.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional


def box_mean(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the ``(2 radius + 1)²`` window around each pixel (replicate padding), (B, C, H, W)."""
    padded = functional.pad(image, (radius, radius, radius, radius), mode="replicate")
    return functional.avg_pool2d(padded, 2 * radius + 1, stride=1)


def guided_detail_fix(restored: torch.Tensor, lq: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Refine ``restored`` with the guided filter whose guide is ``lq`` (each channel by its own).

    Args:
        restored: [-1, 1], (B, 3, H, W).
        lq: [-1, 1], (B, 3, H, W), the same size as ``restored``.
        radius: window radius r in pixels (≥ 1).
        eps: regulariser of the local variance of ``lq`` ([-1, 1]² units); larger keeps more of
            ``restored``'s own local mean.

    Returns:
        [-1, 1], (B, 3, H, W).
    """
    lq_mean = box_mean(lq, radius)
    restored_mean = box_mean(restored, radius)
    covariance = box_mean(lq * restored, radius) - lq_mean * restored_mean
    variance = box_mean(lq * lq, radius) - lq_mean * lq_mean
    gain = covariance / (variance + eps)
    offset = restored_mean - gain * lq_mean
    return (box_mean(gain, radius) * lq + box_mean(offset, radius)).clamp(-1.0, 1.0)
