"""Built-in source photos: natural images shipped inside installed packages (no download).

Every photo that scikit-image's wheel bundles (colour photos, grayscale photos replicated to RGB
and texture photos; synthetic drawings, binary masks, near-black astronomy fields and the right
stereo view, a near-copy of the left one, are left out) and scikit-learn's ``load_sample_images``
(china, flower). See docs/data.md.
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
    # colour photos
    "skimage/astronaut": _skimage("astronaut"),
    "skimage/chelsea": _skimage("chelsea"),
    "skimage/coffee": _skimage("coffee"),
    "skimage/rocket": _skimage("rocket"),
    "skimage/motorcycle": _skimage("stereo_motorcycle"),
    "skimage/immunohistochemistry": _skimage("immunohistochemistry"),
    "skimage/retina": _skimage("retina"),
    "sklearn/china": _sklearn(0),
    "sklearn/flower": _sklearn(1),
    # grayscale photos (replicated to RGB)
    "skimage/camera": _skimage("camera"),
    "skimage/coins": _skimage("coins"),
    "skimage/moon": _skimage("moon"),
    "skimage/page": _skimage("page"),
    "skimage/text": _skimage("text"),
    "skimage/clock": _skimage("clock"),
    "skimage/cell": _skimage("cell"),
    # textures
    "skimage/brick": _skimage("brick"),
    "skimage/grass": _skimage("grass"),
    "skimage/gravel": _skimage("gravel"),
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


def is_colour(image: np.ndarray, threshold: float = 0.01) -> bool:
    """Whether ``image`` ([0, 1], (H, W, 3)) has colour: the mean over pixels of the std across its three
    channels exceeds ``threshold`` (greyscale photos replicated to RGB give exactly 0; the built-in colour
    photos give 0.047 to 0.20)."""
    return float(image.std(axis=2).mean()) > threshold


def weighted_sources(source_ids: list[str], photos: dict, colour_weight: int) -> list[str]:
    """``source_ids`` with each colour photo repeated ``colour_weight`` times, sorted (the round-robin
    order of the training patches)."""
    colour = [source for source in source_ids if is_colour(photos[source].image)]
    return sorted(source_ids + colour * (colour_weight - 1))


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


def split_sources(
    source_ids: list[str], test_fraction: float, seed: int, val_fraction: float = 0.0
) -> tuple[list[str], list[str], list[str]]:
    """Shuffle ``source_ids`` with ``seed``; hold out ``ceil(test_fraction * n)`` for test and
    ``ceil(val_fraction * n)`` for validation (each at least 1 when its fraction is > 0).

    Returns:
        ``(train_ids, val_ids, test_ids)``, disjoint, each sorted (``val_ids`` empty for fraction 0).

    Raises:
        DataError: too few source images to leave at least one for training.
    """
    total = len(source_ids)
    test_count = max(1, int(np.ceil(test_fraction * total)))
    val_count = max(1, int(np.ceil(val_fraction * total))) if val_fraction > 0 else 0
    if total - test_count - val_count < 1:
        raise DataError(
            f"need at least {test_count + val_count + 1} source images to split train/val/test, got {total}"
        )
    order = [source_ids[index] for index in np.random.default_rng(seed).permutation(total)]
    test = sorted(order[:test_count])
    val = sorted(order[test_count : test_count + val_count])
    train = sorted(order[test_count + val_count :])
    return train, val, test


def random_patch(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` × ``size`` crop of ``image`` ([0, 1], (H, W, 3))."""
    height, width, _ = image.shape
    if height < size or width < size:
        raise DataError(f"photo of {height}x{width} is smaller than the patch size {size}")
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return image[top : top + size, left : left + size]
