"""Per-image features of the content checks: PSNR, luminance structure, alignment, hashes, thumbnails.

Every function takes decoded 8-bit images ``uint8, (H, W, 3)`` (the files as written) unless stated.
All are cheap numpy/scipy/Pillow code on a downsampled copy, so one pass over a few hundred pairs
takes well under a second of compute.
"""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
from PIL import Image
from scipy import fft, ndimage

IDENTICAL_PSNR_DB = 100.0  # what PSNR reports for identical images (the true value is infinite)
ALIGNMENT_SIDE = 32  # side of the luminance map alignment, structure and the perceptual hash use
THUMBNAIL_SIDE = 16  # side of the RGB thumbnail near-duplicates are confirmed on
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_LOCAL_SIGMA = 2.0  # Gaussian radius (pixels of the 32x32 map) of the local mean and contrast
_LOCAL_EPSILON = 0.01  # contrast floor of the local normalisation (flat areas stay near 0)


def psnr_db(first: np.ndarray, second: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of the same shape on the [0, 1] scale; identical -> 100 dB."""
    difference = first.astype(np.float32) - second.astype(np.float32)
    mse = float(np.mean(difference * difference)) / 255.0**2
    return IDENTICAL_PSNR_DB if mse == 0.0 else min(IDENTICAL_PSNR_DB, 10.0 * float(np.log10(1.0 / mse)))


def luminance(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luminance in [0, 1], (H, W), float32 of a uint8 (H, W, 3) image."""
    return (image.astype(np.float32) @ _LUMA) / 255.0


def luminance_map(image: np.ndarray) -> np.ndarray:
    """The 32x32 area-averaged luminance of a uint8 (H, W, 3) image, (32, 32) float32 in [0, 1].

    Area averaging also averages out most of the noise, rain drops and snow flakes of an lq.
    """
    side = (ALIGNMENT_SIDE, ALIGNMENT_SIDE)
    return np.asarray(Image.fromarray(luminance(image), mode="F").resize(side, Image.Resampling.BOX))


def _blur_matrix(side: int, sigma: float) -> np.ndarray:
    """The (side, side) matrix of a reflect-padded 1-D Gaussian blur (what ndimage applies per axis)."""
    return ndimage.gaussian_filter1d(np.eye(side, dtype=np.float64), sigma, axis=0, mode="reflect")


_BLUR = _blur_matrix(ALIGNMENT_SIDE, _LOCAL_SIGMA)


def _local_blur(luma_map: np.ndarray) -> np.ndarray:
    return _BLUR @ luma_map @ _BLUR.T


def structure(luma_map: np.ndarray) -> float:
    """Standard deviation of the high-passed 32x32 luminance map (0 for a flat or smooth image)."""
    return float(np.std(luma_map - _local_blur(luma_map)))


def _locally_normalised(luma_map: np.ndarray) -> np.ndarray:
    centred = luma_map - _local_blur(luma_map)
    contrast = np.sqrt(np.maximum(_local_blur(centred * centred), 0.0))
    return centred / (contrast + _LOCAL_EPSILON)


def alignment(lq_map: np.ndarray, gt_map: np.ndarray) -> float:
    """Pearson correlation of the locally contrast-normalised luminance maps of lq and gt, in [-1, 1].

    Local normalisation (Gaussian σ = 2 px of the 32x32 map) removes the local gain and offset that haze
    (``J t + A (1 - t)``) and low light (``s J^g``) apply, so a correctly paired lq keeps a clearly
    positive correlation while an lq of a different picture scatters around 0.
    """
    first = _locally_normalised(lq_map.astype(np.float64)).ravel()
    second = _locally_normalised(gt_map.astype(np.float64)).ravel()
    first = first - first.mean()
    second = second - second.mean()
    denominator = float(np.sqrt(np.dot(first, first) * np.dot(second, second)))
    return float(np.dot(first, second)) / denominator if denominator > 0 else 0.0


def perceptual_hash(luma_map: np.ndarray) -> int:
    """A 63-bit DCT perceptual hash: signs of the 8x8 lowest DCT frequencies (no DC) of the 32x32 map."""
    coefficients = fft.dctn(luma_map.astype(np.float64), norm="ortho")[:8, :8].ravel()[1:]
    bits = coefficients > np.median(coefficients)
    return int(sum(1 << index for index, bit in enumerate(bits) if bit))


def content_hash(image: np.ndarray) -> str:
    """SHA-256 of the decoded pixels and their shape (equal for byte-different files of equal pixels)."""
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def thumbnail_vector(image: np.ndarray) -> np.ndarray:
    """The 16x16 area-averaged RGB thumbnail in [0, 1], flattened to (768,) float32."""
    side = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    small = Image.fromarray(image).resize(side, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32).ravel() / 255.0


def thumbnail_png_base64(image: np.ndarray, long_side: int) -> str:
    """A PNG thumbnail (long side ``long_side``, nearest neighbour) of a uint8 image, base64 encoded."""
    height, width = image.shape[:2]
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    buffer = io.BytesIO()
    Image.fromarray(image).resize(size, Image.Resampling.NEAREST).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
