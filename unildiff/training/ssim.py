"""Differentiable SSIM (Wang et al. 2004; 11×11 Gaussian window, σ = 1.5) for the stage-2 loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gaussian_window(
    size: int, sigma: float, channels: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    coordinates = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    profile = torch.exp(-(coordinates**2) / (2 * sigma**2))
    profile = profile / profile.sum()
    window = profile[:, None] * profile[None, :]
    return window.expand(channels, 1, size, size).contiguous()


def ssim(
    image: torch.Tensor, reference: torch.Tensor, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Mean SSIM of two image batches, per channel, valid-region (no padding).

    Args:
        image: [0, 1], (B, C, H, W).
        reference: [0, 1], (B, C, H, W).
        window_size: Side of the Gaussian window (reduced to the image size when larger).
        sigma: Standard deviation of the window.

    Returns:
        0-dim tensor; 1 for identical images.
    """
    channels = image.shape[1]
    size = min(window_size, image.shape[-2], image.shape[-1])
    window = _gaussian_window(size, sigma, channels, image.device, image.dtype)
    c1, c2 = 0.01**2, 0.03**2

    def blur(tensor: torch.Tensor) -> torch.Tensor:
        return F.conv2d(tensor, window, groups=channels)

    mean_x, mean_y = blur(image), blur(reference)
    var_x = blur(image * image) - mean_x**2
    var_y = blur(reference * reference) - mean_y**2
    covariance = blur(image * reference) - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean()
