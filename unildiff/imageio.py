"""Mode-preserving image files: read any RGB, RGBA, grayscale or 16-bit image, write it back alike.

Reading decodes with OpenCV (``IMREAD_UNCHANGED`` keeps 16 bits and alpha); the size is checked from
the header with Pillow first, so an absurdly large file is refused before it is decoded. Writing
goes through :func:`unildiff.utils.atomic.atomic_path`, so a reader never sees a half-written file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unildiff.errors import DataError
from unildiff.utils.atomic import atomic_path

SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes ``unildiff restore`` reads (lower case)."""

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
"""Default pixel budget (64 megapixels): larger images are refused with their pixel count."""


@dataclass
class LoadedImage:
    """A decoded image split into colour and alpha, plus what is needed to write it back alike.

    Attributes:
        rgb: colour, [0, 1], (H, W, 3), float32. Grayscale files are replicated to three channels.
        alpha: alpha channel, [0, 1], (H, W), float32, or ``None`` when the file has none.
        channels: channels in the file: 1 (grayscale), 2 (grayscale + alpha), 3 (RGB) or 4 (RGBA).
        bit_depth: 8 or 16 bits per channel in the file.
        path: the file it came from.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    channels: int
    bit_depth: int
    path: Path

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.rgb.shape[1])


def is_supported(path: Path) -> bool:
    """Whether ``path`` has a suffix that :func:`read_image` reads."""
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def check_pixel_budget(path: Path, max_pixels: int) -> tuple[int, int]:
    """Read only the header of ``path`` and refuse images above ``max_pixels``.

    Returns:
        ``(height, width)`` from the header.

    Raises:
        DataError: the file is unreadable, zero-size, or has more than ``max_pixels`` pixels.
    """
    from PIL import Image

    if not path.is_file():
        raise DataError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"empty file (0 bytes): {path}")
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # we apply our own, configurable budget below
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    if width <= 0 or height <= 0:
        raise DataError(f"zero-size image ({width}x{height}): {path}")
    if width * height > max_pixels:
        raise DataError(
            f"image {path} has {width * height} pixels ({width}x{height}), above the pixel budget "
            f"of {max_pixels} (raise --max-pixels to allow it)"
        )
    return height, width


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file, keeping its channels and bit depth.

    Args:
        path: PNG, JPEG, BMP, TIFF or WebP file.
        max_pixels: refuse images with more pixels than this (checked from the header first).

    Returns:
        The image as a :class:`LoadedImage` (colour [0, 1], (H, W, 3), float32).

    Raises:
        DataError: naming the file, when it is missing, empty, corrupt, unsupported or too large.
    """
    import cv2

    path = Path(path)
    if not is_supported(path):
        raise DataError(
            f"unsupported image type {path.suffix!r}: {path} (supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    check_pixel_budget(path, max_pixels)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise DataError(f"corrupt or undecodable image: {path}")
    if array.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif array.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    else:
        raise DataError(f"unsupported pixel type {array.dtype} (8- or 16-bit expected): {path}")
    values = array.astype(np.float32) / scale
    if values.ndim == 2:
        values = values[:, :, None]
    channels = values.shape[2]
    alpha = None
    if channels == 1:
        rgb = np.repeat(values, 3, axis=2)
    elif channels == 2:
        rgb, alpha = np.repeat(values[:, :, :1], 3, axis=2), values[:, :, 1]
    elif channels == 3:
        rgb = values[:, :, ::-1]
    elif channels == 4:
        rgb, alpha = values[:, :, 2::-1], values[:, :, 3]
    else:
        raise DataError(f"unsupported channel count {channels}: {path}")
    return LoadedImage(np.ascontiguousarray(rgb), alpha, channels, bit_depth, path)


def write_image(path: str | Path, rgb: np.ndarray, like: LoadedImage) -> Path:
    """Write ``rgb`` atomically with the channels and bit depth of ``like`` (alpha copied from it).

    Args:
        path: destination; its suffix picks the format.
        rgb: colour, [0, 1], (H, W, 3), float32, the same size as ``like``.
        like: the source image whose mode (grayscale/RGB, alpha, 8/16 bit) is kept.

    Returns:
        ``path``.
    """
    import cv2

    path = Path(path)
    if rgb.shape[:2] != (like.height, like.width):
        raise DataError(f"output size {rgb.shape[:2]} differs from input {like.height}x{like.width}: {path}")
    colour = np.clip(rgb, 0.0, 1.0)
    if like.channels in (1, 2):
        planes = [colour.mean(axis=2)]
    else:
        planes = [colour[:, :, 2], colour[:, :, 1], colour[:, :, 0]]
    if like.channels in (2, 4) and like.alpha is not None:
        planes.append(like.alpha)
    stacked = np.stack(planes, axis=2) if len(planes) > 1 else planes[0]
    if like.bit_depth == 16 and path.suffix.lower() in (".png", ".tif", ".tiff"):
        encoded = np.round(stacked * 65535.0).astype(np.uint16)
    else:
        encoded = np.round(stacked * 255.0).astype(np.uint8)
    with atomic_path(path) as temporary:
        if not cv2.imwrite(str(temporary), encoded):
            raise DataError(f"cannot write image: {path}")
    return path
