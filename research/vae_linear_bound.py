"""Round-trip PSNR of a *linear* factor-4 code: PCA of 4×4 RGB patches.

Backs docs/experiments/2026-11-30-tiny-vae-sweeps.md.

What a factor-4 latent with ``--components`` channels can hold, fitted in closed form on the prepared
train split's gt images and applied to train, val and test. No network, no training: an upper reference
for how much of the tiny VAE's error is learning speed rather than latent size.

    python research/vae_linear_bound.py --prepared data/prepared --components 16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from unildiff import paths

FACTOR = 4


def load_gt(prepared: Path, split: str) -> list[np.ndarray]:
    """The split's gt images, [0, 1] float64, (H, W, 3)."""
    paths = sorted((prepared / split / "gt").glob("*.png"))
    return [np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255 for path in paths]


def patches(image: np.ndarray) -> np.ndarray:
    """Non-overlapping FACTOR×FACTOR RGB patches, (N, FACTOR·FACTOR·3)."""
    height, width = (side - side % FACTOR for side in image.shape[:2])
    grid = image[:height, :width].reshape(height // FACTOR, FACTOR, width // FACTOR, FACTOR, 3)
    return grid.transpose(0, 2, 1, 3, 4).reshape(-1, FACTOR * FACTOR * 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=paths.PREPARED)
    parser.add_argument("--components", type=int, default=16, help="latent channels kept")
    args = parser.parse_args()
    train = np.concatenate([patches(image) for image in load_gt(args.prepared, "train")])
    mean = train.mean(0)
    _, vectors = np.linalg.eigh(np.cov((train - mean).T))
    basis = vectors[:, ::-1][:, : args.components]
    for split in ("train", "val", "test"):
        scores = []
        for image in load_gt(args.prepared, split):
            original = patches(image)
            decoded = np.clip((original - mean) @ basis @ basis.T + mean, 0, 1)
            scores.append(10 * np.log10(1 / np.mean((decoded - original) ** 2)))
        if scores:
            print(
                f"{split}: mean {np.mean(scores):.2f} dB, min {np.min(scores):.2f} dB, {len(scores)} images"
            )


if __name__ == "__main__":
    main()
