"""Typed config of the ``prepare`` stage, built by the stage from params.yaml's ``data``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unildiff.errors import ConfigError

SOURCES = ("builtin", "folder")


@dataclass(frozen=True)
class DataConfig:
    """Settings of the ``prepare`` stage.

    Attributes:
        setting: ``aio3`` | ``aio5`` | ``cdd11`` | ``custom`` | ``single`` | ``autodir`` | ``udc``
            (:mod:`unildiff.data.settings`).
        task: the one task of ``setting: single`` (e.g. ``derain``); empty for every other setting.
        source: ``builtin`` (photos shipped with scikit-image/scikit-learn) or ``folder`` (``root``).
        root: the dataset folder for ``source=folder``, inside the repository (normally
            ``data/raw/<name>``, tracked with ``dvc add``); ``prepare`` depends on it in ``dvc.yaml``. With
            ``source=builtin`` it names the empty placeholder ``data/raw/builtin``.
        patch_size: side of the square training patches cut from the built-in photos.
        test_patch_size: side of the test patches (larger, so padding/tiling is exercised).
        train_pairs_per_task: built-in training pairs per task.
        test_pairs_per_task: built-in test pairs per task.
        val_pairs_per_task: built-in validation pairs per task (settings are tuned on them, never on test).
        test_fraction: fraction of the built-in source photos held out for test (split by photo).
        val_fraction: fraction of the source photos held out for validation (by photo; for folder
            datasets, of the training sources). 0 = no validation split.
        source_short_side: built-in photos are resized so their short side is this (0 keeps them).
        colour_source_weight: how many times each colour photo of the built-in training split enters the
            round-robin that assigns training patches to photos (1 = every photo alike). 8 of the 11
            built-in training photos are greyscale; weight 3 gives colour about half of the patches
            (docs/data.md, "Colour balance").
        custom_prompt: prompt of the single task of the ``custom`` setting.
        seed: seed of the split, the crops and the degradations.
    """

    setting: str = "aio3"
    task: str = ""
    source: str = "builtin"
    root: Path = Path("data/raw/builtin")
    patch_size: int = 64
    test_patch_size: int = 128
    train_pairs_per_task: int = 100
    test_pairs_per_task: int = 4
    val_pairs_per_task: int = 4
    test_fraction: float = 0.25
    val_fraction: float = 0.15
    source_short_side: int = 256
    colour_source_weight: int = 1
    custom_prompt: str = "restore the image"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"unknown data.source {self.source!r} (valid: {', '.join(SOURCES)})")
        for name in (
            "patch_size",
            "test_patch_size",
            "train_pairs_per_task",
            "test_pairs_per_task",
            "val_pairs_per_task",
            "colour_source_weight",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.val_fraction < 1.0 or self.test_fraction + self.val_fraction >= 1.0:
            raise ConfigError(
                f"data.val_fraction must be in [0, 1) with test_fraction + val_fraction < 1, "
                f"got {self.val_fraction}"
            )
        if self.source_short_side and self.source_short_side < max(self.patch_size, self.test_patch_size):
            raise ConfigError(
                f"data.source_short_side ({self.source_short_side}) must be 0 or >= the patch sizes "
                f"({self.patch_size}, {self.test_patch_size})"
            )
