"""Readers of real-pair datasets with their own layouts: RainDrop and the under-display-camera (UDC) pairs.

RainDrop (Qian et al. 2018; the ``raindrop`` task of ``data.setting`` ``single`` and ``autodir``)::

    train/data/<n>_rain.png   <->  train/gt/<n>_clean.png
    test_a/data/<n>_rain.png  <->  test_a/gt/<n>_clean.png     (the aligned test set papers report)

UDC (Zhou et al. 2021, the T-OLED / P-OLED pairs; ``data.setting: udc``, zero-shot evaluation)::

    [Train/]{Toled,Poled}/{LQ,HQ}/<same name>    optional: only a model trained on UDC needs it
    Test/{Toled,Poled}/{LQ,HQ}/<same name>       (``Val/`` when there is no ``Test/``)

The challenge ships its validation and test sets as ``.mat`` arrays; they must first be written as images
in this layout (one PNG per pair, same name on both sides). Both displays show the same pictures, so the
source id of a UDC pair is ``<split folder>/<name>``, shared by its T-OLED and P-OLED pairs.

Folder names match case-insensitively. A pair that fails to match raises
:class:`~unildiff.errors.DataError` naming the image and the folder searched.
"""

from __future__ import annotations

from pathlib import Path

from unildiff.data.readers import FolderPair, _child, _require, _source_id, match_pairs
from unildiff.data.settings import UDC_TASKS
from unildiff.errors import DataError

RAINDROP_TASK = "raindrop"
#: UDC task -> its display folder.
UDC_FOLDERS = dict(zip(UDC_TASKS, ("Toled", "Poled"), strict=True))


def _raindrop_lq_key(stem: str) -> str:
    return stem.removesuffix("_rain")


def _raindrop_gt_key(stem: str) -> str:
    return stem.removesuffix("_clean")


def read_raindrop(root: Path, source_root: Path | None = None) -> list[FolderPair]:
    """Pairs of a RainDrop folder: ``train/{data,gt}`` and ``test_a/{data,gt}``.

    Args:
        root: The RainDrop folder.
        source_root: Folder the source ids are relative to (the dataset root; ``root`` when ``None``).

    Raises:
        DataError: a missing folder, or a rainy image without its clean one (or the reverse).
    """
    source_root = source_root or root
    pairs = []
    for split, folder in (("train", "train"), ("test", "test_a")):
        split_dir = _require(root, folder)
        matched = match_pairs(
            _require(split_dir, "data"), _require(split_dir, "gt"), _raindrop_lq_key, _raindrop_gt_key
        )
        pairs += [FolderPair(split, RAINDROP_TASK, lq, gt, _source_id(source_root, gt)) for lq, gt in matched]
    return pairs


def read_udc(root: Path) -> list[FolderPair]:
    """Pairs of the UDC layout: ``{Train,Test}/{Toled,Poled}/{LQ,HQ}`` (``Val`` for ``Test`` if absent).

    Raises:
        DataError: no ``Test/`` or ``Val/`` folder, a missing display folder, or an unmatched pair.
    """
    test_dir = _child(root, "Test") or _child(root, "Val")
    if test_dir is None:
        raise DataError(f"data.root: missing folder {root / 'Test'} (or {root / 'Val'}) of the UDC pairs")
    splits = [("test", test_dir)]
    train_dir = _child(root, "Train")
    if train_dir is not None:
        splits.insert(0, ("train", train_dir))
    pairs = []
    for split, split_dir in splits:
        for task, folder in UDC_FOLDERS.items():
            display = _require(split_dir, folder)
            matched = match_pairs(_require(display, "LQ"), _require(display, "HQ"))
            # T-OLED and P-OLED show the same DIV2K pictures: a picture's two pairs share a source id,
            # so the validation split and the duplicate checks treat them as one photo.
            pairs += [FolderPair(split, task, lq, gt, f"{split_dir.name}/{gt.stem}") for lq, gt in matched]
    return pairs
