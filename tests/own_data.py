"""A small dataset of one's own for the tests that follow docs/data.md, "Train on your own data".

Real-looking pairs in the ``custom`` layout (``lq/`` + ``gt/``, same file names): structured 64 px crops
of the built-in photos as gts, each lq a hazed, noisy copy of its gt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from unildiff.data.imageio import to_uint8
from unildiff.data.sources import load_builtin_photos
from unildiff.data.validate_features import luminance_map, structure

CROP = 64
CORNERS = ((0, 0), (96, 96), (160, 32))


def degrade(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The lq of a gt: haze (0.6 · gt + 0.35) plus Gaussian noise σ 0.03; uint8 (H, W, 3) in and out."""
    return to_uint8(gt / 255.0 * 0.6 + 0.35 + rng.normal(0.0, 0.03, gt.shape))


def write_custom_pairs(root: Path, count: int = 12, seed: int = 2) -> list[str]:
    """Write ``count`` pairs as ``root/lq/imgNN.png`` + ``root/gt/imgNN.png``; return the file names."""
    rng = np.random.default_rng(seed)
    names: list[str] = []
    for photo in load_builtin_photos(256):
        image = to_uint8(photo.image)
        for top, left in CORNERS:
            gt = np.ascontiguousarray(image[top : top + CROP, left : left + CROP])
            if structure(luminance_map(gt)) < 0.08 or len(names) == count:
                continue
            name = f"img{len(names):02d}.png"
            for side, array in (("lq", degrade(gt, rng)), ("gt", gt)):
                (root / side).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / side / name)
            names.append(name)
    assert len(names) == count, f"only {len(names)} structured crops"
    return names


def redegrade(root: Path, name: str, seed: int) -> None:
    """Replace the lq of pair ``name`` with a fresh degradation of its gt (one changed image)."""
    with Image.open(root / "gt" / name) as image:
        gt = np.asarray(image.convert("RGB"))
    Image.fromarray(degrade(gt, np.random.default_rng(seed))).save(root / "lq" / name)
