"""``PairedImageDataset``: the prepared lq/gt pairs as torch tensors for training and evaluation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from unildiff.data.imageio import image_to_tensor, read_image
from unildiff.data.manifest import SPLITS, ManifestRow, read_manifest
from unildiff.errors import ConfigError, DataError


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[0, 1], (H, W, 3)`` numpy -> ``[-1, 1], (3, H, W)`` float32 tensor, contiguous (the layout the
    batches have always had)."""
    return image_to_tensor(image)[0].contiguous()


class PairedImageDataset(Dataset):
    """The pairs of one split of a prepared dir.

    Item: ``{"lq": [-1, 1] (3, H, W), "gt": [-1, 1] (3, H, W), "prompt": str, "caption": str, "task": str,
    "pair_id": str}``; ``prompt`` is the task prompt, ``caption`` the picture's description (often empty).
    With ``crop_size`` set, lq and gt get the same random ``crop_size`` crop, drawn from a generator
    seeded by ``(seed, epoch, index)`` so a run is reproducible; call :meth:`set_epoch` each epoch for new
    crops. A pair smaller than the crop is first padded by reflection (:func:`pad_to_crop`). Without
    ``crop_size``, the whole image is returned.

    Args:
        prepared_dir: the output of the ``prepare`` stage (holds ``manifest.csv``).
        split: ``train`` or ``test``.
        crop_size: side of the random square crop, or None for whole images.
        seed: seed of the crops.
        tasks: keep only these tasks (None keeps all).
    """

    def __init__(
        self,
        prepared_dir: str | os.PathLike,
        split: str,
        crop_size: int | None,
        seed: int = 0,
        tasks: tuple[str, ...] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
        if crop_size is not None and crop_size < 1:
            raise ConfigError(f"crop_size must be >= 1 or None, got {crop_size}")
        self.prepared_dir = Path(prepared_dir)
        self.split = split
        self.crop_size = crop_size
        self.seed = seed
        self.epoch = 0
        rows = [row for row in read_manifest(self.prepared_dir) if row.split == split]
        if tasks is not None:
            known = sorted({row.task for row in rows})
            unknown = [task for task in tasks if task not in known]
            if unknown:
                raise ConfigError(f"unknown task {unknown[0]!r} in {split} split (valid: {', '.join(known)})")
            rows = [row for row in rows if row.task in tasks]
        if not rows:
            raise DataError(f"no {split} pairs in {self.prepared_dir / 'manifest.csv'}")
        self.rows: list[ManifestRow] = rows

    def set_epoch(self, epoch: int) -> None:
        """Choose the crops of epoch ``epoch`` (deterministic per epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        row = self.rows[index]
        lq = read_image(self.prepared_dir / row.lq_path)
        gt = read_image(self.prepared_dir / row.gt_path)
        if lq.shape != gt.shape:
            raise DataError(f"size mismatch: {row.lq_path} {lq.shape[:2]} vs {row.gt_path} {gt.shape[:2]}")
        if self.crop_size is not None:
            lq, gt = self._crop(lq, gt, index, row)
        return {
            "lq": to_tensor(lq),
            "gt": to_tensor(gt),
            "prompt": row.prompt,
            "caption": row.caption,
            "task": row.task,
            "pair_id": row.pair_id,
        }

    def _crop(
        self, lq: np.ndarray, gt: np.ndarray, index: int, row: ManifestRow
    ) -> tuple[np.ndarray, np.ndarray]:
        size = self.crop_size
        lq, gt = pad_to_crop(lq, size), pad_to_crop(gt, size)
        height, width, _ = gt.shape
        rng = np.random.default_rng([self.seed, self.epoch, index])
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        window = (slice(top, top + size), slice(left, left + size))
        return lq[window], gt[window]


def pad_to_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The rule for images smaller than the crop: pad by mirroring (``numpy.pad`` mode ``reflect``) up
    to ``size`` on the short side(s), at the bottom and the right; larger sides are left as they are.

    Reflecting keeps the degradation's statistics (a resize would smooth the noise of a noisy LQ and
    change its level), and lq and gt are padded alike, so they stay in register. numpy reflects again
    as often as needed, so an image of any size ≥ 2 px reaches the crop.

    Args:
        image: [0, 1], (H, W, 3).
        size: Crop side in pixels.

    Returns:
        [0, 1], (max(H, size), max(W, size), 3).
    """
    height, width, _ = image.shape
    if height >= size and width >= size:
        return image
    if min(height, width) < 2:
        raise DataError(f"an image of {width}x{height} px cannot be padded to the {size}x{size} crop")
    padding = ((0, max(size - height, 0)), (0, max(size - width, 0)), (0, 0))
    return np.pad(image, padding, mode="reflect")
