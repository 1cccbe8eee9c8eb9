"""Seeded synthetic degradation models.

Every function maps a clean image ``[0, 1], (H, W, 3), float32`` to a degraded image of the same range,
layout and dtype. Each takes a ``numpy.random.Generator`` and is deterministic given it (JPEG draws
nothing but accepts one for a uniform signature). All are vectorised numpy/scipy code.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from unildiff.data.imageio import to_uint8


def _check(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an image (H, W, 3), got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def gaussian_noise(
    image: np.ndarray, rng: np.random.Generator, sigma: float = 25.0, clip: bool = True
) -> np.ndarray:
    """Additive white Gaussian noise, ``lq = gt + n``, ``n ~ N(0, (sigma / 255)^2)`` per pixel and channel.

    Args:
        image: clean image, [0, 1], (H, W, 3).
        rng: random generator.
        sigma: standard deviation on the [0, 255] scale (the benchmark levels are 15, 25 and 50).
        clip: clip the result to [0, 1] (turn off only to inspect the noise statistics).
    """
    image = _check(image)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    noisy = image + noise
    return np.clip(noisy, 0.0, 1.0) if clip else noisy


def line_kernel(length: int, angle_degrees: float) -> np.ndarray:
    """A normalised anti-aliased line kernel of ``length`` pixels at ``angle_degrees`` from vertical."""
    length = max(int(length), 1)
    size = length if length % 2 == 1 else length + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    center = size // 2
    theta = np.deg2rad(angle_degrees)
    steps = np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, num=4 * length)
    rows = center + steps * np.cos(theta)
    cols = center + steps * np.sin(theta)
    _splat(kernel, rows, cols)
    return kernel / kernel.sum()


def _splat(kernel: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """Add unit mass at sub-pixel points (bilinear weights) into ``kernel`` in place."""
    size = kernel.shape[0]
    rows = np.clip(rows, 0, size - 1.000001)
    cols = np.clip(cols, 0, size - 1.000001)
    row0 = np.floor(rows).astype(int)
    col0 = np.floor(cols).astype(int)
    fraction_row = rows - row0
    fraction_col = cols - col0
    np.add.at(kernel, (row0, col0), (1 - fraction_row) * (1 - fraction_col))
    np.add.at(kernel, (row0 + 1, col0), fraction_row * (1 - fraction_col))
    np.add.at(kernel, (row0, col0 + 1), (1 - fraction_row) * fraction_col)
    np.add.at(kernel, (row0 + 1, col0 + 1), fraction_row * fraction_col)


def rain_streaks(
    image: np.ndarray,
    rng: np.random.Generator,
    density: float = 0.01,
    length: int = 11,
    angle_degrees: float = 10.0,
    intensity: float = 0.8,
) -> np.ndarray:
    """Rain streaks: sparse noise motion-blurred into lines at an angle, added to the image (Rain100L-like).

    Args:
        image: clean image, [0, 1], (H, W, 3).
        rng: random generator.
        density: fraction of pixels that seed a drop.
        length: streak length in pixels.
        angle_degrees: streak angle from vertical.
        intensity: brightness of the streak layer after normalisation.
    """
    image = _check(image)
    height, width, _ = image.shape
    seeds = (rng.random((height, width), dtype=np.float32) < density).astype(np.float32)
    seeds *= rng.uniform(0.5, 1.0, size=(height, width)).astype(np.float32)
    streaks = ndimage.convolve(seeds, line_kernel(length, angle_degrees), mode="wrap")
    peak = float(streaks.max())
    if peak > 0:
        streaks = streaks / peak
    return np.clip(image + intensity * streaks[:, :, None], 0.0, 1.0)


def depth_proxy(height: int, width: int, rng: np.random.Generator, smoothness: float = 0.25) -> np.ndarray:
    """A smooth scene-depth proxy in [0, 1], (H, W): far at the top, plus a smooth random field."""
    gradient = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None] * np.ones((1, width), np.float32)
    field = ndimage.gaussian_filter(
        rng.standard_normal((height, width)).astype(np.float32),
        sigma=smoothness * min(height, width),
        mode="wrap",
    )
    spread = float(field.max() - field.min())
    field = (field - field.min()) / spread if spread > 0 else np.zeros_like(field)
    depth = 0.6 * gradient + 0.4 * field
    return depth.astype(np.float32)


def haze(
    image: np.ndarray,
    rng: np.random.Generator,
    beta: float = 1.0,
    airlight: float = 0.9,
    depth: np.ndarray | None = None,
) -> np.ndarray:
    """Haze by the atmospheric scattering model ``I = J t + A (1 - t)`` with ``t = exp(-beta d)``.

    Args:
        image: clean image ``J``, [0, 1], (H, W, 3).
        rng: random generator (draws the depth proxy ``d`` unless ``depth`` is given).
        beta: scattering coefficient (haze density); larger is hazier.
        airlight: global atmospheric light ``A`` in [0, 1].
        depth: optional depth map in [0, 1], (H, W).
    """
    image = _check(image)
    height, width, _ = image.shape
    if depth is None:
        depth = depth_proxy(height, width, rng)
    transmission = np.exp(-beta * (0.2 + depth)).astype(np.float32)[:, :, None]
    return np.clip(image * transmission + airlight * (1.0 - transmission), 0.0, 1.0)


def motion_kernel(size: int, rng: np.random.Generator, steps: int = 64, jitter: float = 0.3) -> np.ndarray:
    """A random motion-blur kernel (size, size) from a random-walk camera trajectory, summing to 1."""
    direction = rng.uniform(0.0, 2 * np.pi)
    angles = direction + np.cumsum(rng.normal(0.0, jitter, size=steps))
    step_length = (size - 1) / (2.0 * steps) * 1.6
    rows = np.cumsum(np.sin(angles) * step_length)
    cols = np.cumsum(np.cos(angles) * step_length)
    rows = rows - (rows.max() + rows.min()) / 2.0 + (size - 1) / 2.0
    cols = cols - (cols.max() + cols.min()) / 2.0 + (size - 1) / 2.0
    kernel = np.zeros((size, size), dtype=np.float32)
    _splat(kernel, rows, cols)
    return kernel / kernel.sum()


def motion_blur(image: np.ndarray, rng: np.random.Generator, kernel_size: int = 11) -> np.ndarray:
    """Motion blur: convolve each channel with a random trajectory kernel (GoPro-like camera shake).

    Args:
        image: clean image, [0, 1], (H, W, 3).
        rng: random generator (draws the kernel).
        kernel_size: side of the square blur kernel in pixels.
    """
    image = _check(image)
    kernel = motion_kernel(kernel_size, rng)
    blurred = ndimage.convolve(image, kernel[:, :, None], mode="reflect")
    return np.clip(blurred, 0.0, 1.0).astype(np.float32)


def low_light(
    image: np.ndarray,
    rng: np.random.Generator,
    gamma: float = 2.0,
    scale: float = 0.3,
    noise_sigma: float = 5.0,
) -> np.ndarray:
    """Low light (LOL-like): ``lq = scale * gt ** gamma + n`` with Gaussian read noise.

    Args:
        image: clean image, [0, 1], (H, W, 3).
        rng: random generator (draws the noise).
        gamma: exponent > 1 darkens mid-tones.
        scale: exposure factor in (0, 1].
        noise_sigma: read-noise standard deviation on the [0, 255] scale.
    """
    image = _check(image)
    dark = scale * np.power(image, gamma, dtype=np.float32)
    return gaussian_noise(dark, rng, sigma=noise_sigma)


def snow(
    image: np.ndarray,
    rng: np.random.Generator,
    density: float = 0.004,
    flake_size: float = 1.0,
    streak_length: int = 5,
    angle_degrees: float = 20.0,
    brightness: float = 0.95,
) -> np.ndarray:
    """Snow: blurred particles of random size plus short falling streaks, alpha-blended to white.

    Args:
        image: clean image, [0, 1], (H, W, 3).
        rng: random generator.
        density: fraction of pixels that seed a flake.
        flake_size: Gaussian radius of the particles in pixels.
        streak_length: length of the falling streaks in pixels.
        angle_degrees: fall angle from vertical.
        brightness: colour of the snow layer.
    """
    image = _check(image)
    height, width, _ = image.shape
    seeds = (rng.random((height, width), dtype=np.float32) < density).astype(np.float32)
    seeds *= rng.uniform(0.6, 1.0, size=(height, width)).astype(np.float32)
    particles = ndimage.gaussian_filter(seeds, sigma=flake_size, mode="wrap")
    streak_seeds = (rng.random((height, width), dtype=np.float32) < density / 2).astype(np.float32)
    streaks = ndimage.convolve(streak_seeds, line_kernel(streak_length, angle_degrees), mode="wrap")
    mask = particles / max(float(particles.max()), 1e-6) + 0.6 * streaks / max(float(streaks.max()), 1e-6)
    mask = np.clip(mask, 0.0, 1.0)[:, :, None]
    return np.clip(image * (1.0 - mask) + brightness * mask, 0.0, 1.0).astype(np.float32)


def jpeg(image: np.ndarray, rng: np.random.Generator, quality: int = 30) -> np.ndarray:
    """JPEG compression artefacts: encode with Pillow at ``quality`` (1–95) and decode.

    Args:
        image: clean image, [0, 1], (H, W, 3).
        rng: unused (the codec is deterministic); accepted for a uniform signature.
        quality: JPEG quality factor.
    """
    del rng
    image = _check(image)
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0
