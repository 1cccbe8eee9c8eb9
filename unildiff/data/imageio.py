"""Read and write images as numpy ``[0, 1], (H, W, 3), float32`` arrays.

Errors name the file: an unreadable image raises :class:`unildiff.errors.DataError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from unildiff.errors import DataError
from unildiff.utils.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has an image suffix (case-insensitive) and does not start with a dot."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def to_float_rgb(array: np.ndarray) -> np.ndarray:
    """Convert a uint8/bool/float array (gray, RGB or RGBA) to ``[0, 1], (H, W, 3), float32``.

    Gray images are replicated to three channels; an alpha channel is dropped.
    """
    if array.dtype == np.bool_:
        array = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    else:
        array = array.astype(np.float32)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(np.clip(array[:, :, :3], 0.0, 1.0))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode the image file ``path``.

    Args:
        path: a PNG/JPEG/BMP/TIFF/WebP file.

    Returns:
        ``[0, 1], (H, W, 3), float32`` (gray images replicated, alpha dropped).

    Raises:
        DataError: the file is missing or cannot be decoded; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGB")
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"cannot decode image {path}: {error}") from None
    return to_float_rgb(array)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise ``[0, 1], (H, W, 3)`` floats to uint8 with rounding."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write ``image`` (``[0, 1], (H, W, 3), float32``) as an 8-bit PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as temporary:
        Image.fromarray(to_uint8(image)).save(temporary, format="PNG", compress_level=1)
    return path


def write_image_into(path: Path, image: np.ndarray) -> None:
    """Write a PNG into a folder that is itself written atomically (no per-file temporary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path, format="PNG", compress_level=1)


def image_to_tensor(image: np.ndarray):
    """Convert colour ``[0, 1], (H, W, 3)`` numpy to a torch tensor ``[-1, 1], (1, 3, H, W)``, float32.

    The tensor shares the (H, W, 3) memory order of ``image`` (a permuted view, not made contiguous);
    call ``.contiguous()`` where a caller needs (3, H, W) memory order. torch is imported here, so the
    ``prepare`` stage, which never calls this, does not need it.
    """
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    return (tensor * 2.0 - 1.0).unsqueeze(0)


def tensor_to_image(tensor) -> np.ndarray:
    """Convert a torch tensor ``[-1, 1], (1, 3, H, W)`` (the first image of a batch) to colour
    ``[0, 1], (H, W, 3)``, float32 numpy (values clamped to the range first)."""
    image = (tensor.detach().float().cpu()[0].clamp(-1.0, 1.0) + 1.0) / 2.0
    return image.permute(1, 2, 0).numpy()
