"""Built-in source photos: natural images shipped inside installed packages (no download).

scikit-image's bundled photos (astronaut, chelsea, coffee, rocket, the left view of stereo_motorcycle,
camera as gray replicated to RGB) and scikit-learn's ``load_sample_images`` (china, flower).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from unildiff.data.imageio import to_float_rgb
from unildiff.errors import DataError


@dataclass(frozen=True)
class SourcePhoto:
    """A clean source photo. ``image`` is [0, 1], (H, W, 3), float32."""

    source_id: str
    image: np.ndarray


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        image = getattr(data, name)()
        return image[0] if isinstance(image, tuple) else image

    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]

    return load


BUILTIN_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "skimage/astronaut": _skimage("astronaut"),
    "skimage/chelsea": _skimage("chelsea"),
    "skimage/coffee": _skimage("coffee"),
    "skimage/rocket": _skimage("rocket"),
    "skimage/motorcycle": _skimage("stereo_motorcycle"),
    "skimage/camera": _skimage("camera"),
    "sklearn/china": _sklearn(0),
    "sklearn/flower": _sklearn(1),
}


def resize_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    """Resize ``image`` ([0, 1], (H, W, 3)) so its short side is ``short_side`` (Lanczos); 0 keeps it."""
    height, width, _ = image.shape
    if short_side <= 0 or min(height, width) == short_side:
        return image
    factor = short_side / min(height, width)
    size = (max(short_side, round(width * factor)), max(short_side, round(height * factor)))
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    return np.asarray(pil, dtype=np.float32) / 255.0


def load_builtin_photos(short_side: int = 0) -> list[SourcePhoto]:
    """Load every built-in photo, resized to ``short_side`` (0 keeps the original size).

    Raises:
        DataError: a photo is missing from the installed package (names it).
    """
    photos = []
    for source_id, load in BUILTIN_PHOTOS.items():
        try:
            array = load()
        except Exception as error:  # a wheel without its bundled data, or a broken install
            raise DataError(f"built-in photo {source_id} cannot be loaded: {error}") from None
        photos.append(SourcePhoto(source_id, resize_short_side(to_float_rgb(np.asarray(array)), short_side)))
    return photos


def split_sources(source_ids: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle ``source_ids`` with ``seed`` and hold out ``ceil(test_fraction * n)`` (at least 1) for test.

    Returns:
        ``(train_ids, test_ids)``, disjoint, each sorted.
    """
    if len(source_ids) < 2:
        raise DataError(f"need at least 2 source images to split train/test, got {len(source_ids)}")
    order = np.random.default_rng(seed).permutation(len(source_ids))
    test_count = min(len(source_ids) - 1, max(1, int(np.ceil(test_fraction * len(source_ids)))))
    test = sorted(source_ids[index] for index in order[:test_count])
    train = sorted(source_ids[index] for index in order[test_count:])
    return train, test


def random_patch(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` × ``size`` crop of ``image`` ([0, 1], (H, W, 3))."""
    height, width, _ = image.shape
    if height < size or width < size:
        raise DataError(f"photo of {height}x{width} is smaller than the patch size {size}")
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return image[top : top + size, left : left + size]
