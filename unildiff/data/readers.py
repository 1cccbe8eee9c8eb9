"""Readers for dataset folders: PromptIR/AdaIR trees, CDD-11 and a generic ``custom`` layout.

PromptIR (aio3) / AdaIR (aio5) layout under ``data.root`` (folder names match case-insensitively)::

    Train/Denoise/**/<clean>           noise is synthesised (σ 15, 25, 50) from the clean images
    Train/Derain/{rainy,gt}/           rain-N  <->  norain-N
    Train/Dehaze/{synthetic,original}/ <id>_<...>  <->  <id>   (synthetic may have sub-folders)
    Train/Deblur/{blur,sharp}/         same names           (aio5)
    Train/Enhance/{low,gt}/            same names           (aio5)
    test/denoise/<subset>/<clean>
    test/{derain,dehaze,deblur,enhance}/[<subset>/]{input,target}/

CDD-11: ``{train,test}/{clear,low,haze,rain,snow,low_haze,...,low_haze_snow}/<same name>``.
Custom: ``lq/`` + ``gt/`` with the same file stems, either directly under the root (split by file with
``test_fraction``) or under ``train/`` and ``test/``.

Single: the one task's folders of the PromptIR/AdaIR tree, or, for ``raindrop``, a RainDrop folder.
AutoDIR: the AdaIR (aio5) tree plus a RainDrop folder ``RainDrop/`` under the root. UDC: see
:mod:`unildiff.data.real_readers`, which reads the RainDrop and UDC layouts.

A pair that fails to match raises :class:`DataError` naming both sides; nothing is skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unildiff.data.imageio import is_image_file
from unildiff.data.settings import CDD11_TASKS, CUSTOM_TASK, Setting
from unildiff.data.sources import split_sources
from unildiff.errors import ConfigError, DataError

KeyFunction = Callable[[str], str]


@dataclass(frozen=True)
class FolderPair:
    """A pair found on disk. ``lq_path`` is None when lq is synthesised from gt (denoising)."""

    split: str
    task: str
    lq_path: Path | None
    gt_path: Path
    source_id: str


def _images(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in pattern if path.is_file() and is_image_file(path))


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name`` (case-insensitive), or None."""
    if not folder.is_dir():
        return None
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def _require(folder: Path, *names: str) -> Path:
    path = folder
    for name in names:
        found = _child(path, name)
        if found is None:
            raise DataError(f"data.root: missing folder {path / name}")
        path = found
    return path


def _source_id(root: Path, gt_path: Path) -> str:
    return gt_path.relative_to(root).with_suffix("").as_posix()


def match_pairs(
    lq_dir: Path,
    gt_dir: Path,
    lq_key: KeyFunction = lambda stem: stem,
    gt_key: KeyFunction = lambda stem: stem,
    one_to_one: bool = True,
    recursive_lq: bool = False,
) -> list[tuple[Path, Path]]:
    """Match every lq file to its gt by key (file stems mapped by ``lq_key`` / ``gt_key``).

    Raises:
        DataError: an lq without a gt, or (``one_to_one``) a gt without an lq, or two gt with one key;
        the message names both sides.
    """
    gt_by_key: dict[str, Path] = {}
    for gt_path in _images(gt_dir):
        key = gt_key(gt_path.stem)
        if key in gt_by_key:
            raise DataError(f"two gt images share the key {key!r}: {gt_by_key[key]} and {gt_path}")
        gt_by_key[key] = gt_path
    pairs, used = [], set()
    for lq_path in _images(lq_dir, recursive=recursive_lq):
        key = lq_key(lq_path.stem)
        if key not in gt_by_key:
            raise DataError(f"unmatched pair: lq {lq_path} has no gt with key {key!r} in {gt_dir}")
        pairs.append((lq_path, gt_by_key[key]))
        used.add(key)
    if one_to_one:
        for key, gt_path in gt_by_key.items():
            if key not in used:
                raise DataError(f"unmatched pair: gt {gt_path} has no lq with key {key!r} in {lq_dir}")
    if not pairs:
        raise DataError(f"no image pairs in {lq_dir} and {gt_dir}")
    return pairs


def _derain_lq_key(stem: str) -> str:
    return stem.removeprefix("rain-")


def _derain_gt_key(stem: str) -> str:
    return stem.removeprefix("norain-")


def _dehaze_lq_key(stem: str) -> str:
    return stem.split("_")[0]


# Real-pair tasks of the PromptIR/AdaIR trees: task -> (train folder, lq, gt, test folder, key functions).
_PROMPTIR_REAL = {
    "derain": ("Derain", "rainy", "gt", "derain", _derain_lq_key, _derain_gt_key),
    "dehaze": ("Dehaze", "synthetic", "original", "dehaze", _dehaze_lq_key, lambda stem: stem),
    "deblur": ("Deblur", "blur", "sharp", "deblur", lambda stem: stem, lambda stem: stem),
    "lowlight": ("Enhance", "low", "gt", "enhance", lambda stem: stem, lambda stem: stem),
}


def _test_pair_dirs(base: Path) -> list[tuple[Path, Path]]:
    """Every ``(input, target)`` folder pair at or below ``base``."""
    found = []
    for folder in [base, *sorted(path for path in base.rglob("*") if path.is_dir())]:
        lq_dir, gt_dir = _child(folder, "input"), _child(folder, "target")
        if lq_dir is not None and gt_dir is not None:
            found.append((lq_dir, gt_dir))
    if not found:
        raise DataError(f"data.root: no input/ + target/ folders under {base}")
    return found


def read_promptir(root: Path, setting: Setting) -> list[FolderPair]:
    """Pairs of the PromptIR (aio3) / AdaIR (aio5) train and test trees under ``root``."""
    pairs: list[FolderPair] = []
    for split in ("train", "test"):
        split_dir = _require(root, "Train" if split == "train" else "test")
        for task in setting.tasks(split):
            if task.name.startswith("denoise_"):
                clean_dir = _require(split_dir, "Denoise")
                clean = _images(clean_dir, recursive=True)
                if not clean:
                    raise DataError(f"data.root: no images in {clean_dir}")
                pairs += [FolderPair(split, task.name, None, path, _source_id(root, path)) for path in clean]
                continue
            if task.name not in _PROMPTIR_REAL:
                raise ConfigError(
                    f"task {task.name!r} has no PromptIR folder "
                    f"(valid: denoise_*, {', '.join(_PROMPTIR_REAL)})"
                )
            train_name, lq_name, gt_name, test_name, lq_key, gt_key = _PROMPTIR_REAL[task.name]
            if split == "train":
                folder = _require(split_dir, train_name)
                dirs = [(_require(folder, lq_name), _require(folder, gt_name))]
            else:
                dirs = _test_pair_dirs(_require(split_dir, test_name))
            one_to_one = task.name != "dehaze"
            for lq_dir, gt_dir in dirs:
                matched = match_pairs(
                    lq_dir, gt_dir, lq_key, gt_key, one_to_one, recursive_lq=task.name == "dehaze"
                )
                pairs += [FolderPair(split, task.name, lq, gt, _source_id(root, gt)) for lq, gt in matched]
    return pairs


def read_cdd11(root: Path) -> list[FolderPair]:
    """Pairs of CDD-11: every ``<split>/<task>/<name>`` matched with ``<split>/clear/<name>``."""
    pairs: list[FolderPair] = []
    for split in ("train", "test"):
        split_dir = _require(root, split)
        clear_dir = _require(split_dir, "clear")
        for folder in sorted(path for path in split_dir.iterdir() if path.is_dir() and path != clear_dir):
            if folder.name.lower() not in CDD11_TASKS:
                raise DataError(
                    f"unknown CDD-11 task folder {folder} (valid: clear, {', '.join(CDD11_TASKS)})"
                )
        for task in CDD11_TASKS:
            lq_dir = _require(split_dir, task)
            matched = match_pairs(lq_dir, clear_dir, one_to_one=False)
            pairs += [FolderPair(split, task, lq, gt, _source_id(root, gt)) for lq, gt in matched]
    return pairs


def read_custom(root: Path, test_fraction: float, seed: int) -> list[FolderPair]:
    """Pairs of ``lq/`` + ``gt/`` (same stems), split by file unless ``train/`` and ``test/`` exist."""
    if _child(root, "train") is not None or _child(root, "test") is not None:
        pairs = []
        for split in ("train", "test"):
            split_dir = _require(root, split)
            matched = match_pairs(_require(split_dir, "lq"), _require(split_dir, "gt"))
            pairs += [FolderPair(split, CUSTOM_TASK, lq, gt, _source_id(root, gt)) for lq, gt in matched]
        return pairs
    matched = match_pairs(_require(root, "lq"), _require(root, "gt"))
    source_ids = [_source_id(root, gt) for _, gt in matched]
    _, _, test_ids = split_sources(source_ids, test_fraction, seed)
    test_set = set(test_ids)
    return [
        FolderPair("test" if source in test_set else "train", CUSTOM_TASK, lq, gt, source)
        for (lq, gt), source in zip(matched, source_ids, strict=True)
    ]


def read_folder_pairs(
    root: Path, setting: Setting, test_fraction: float = 0.25, seed: int = 0
) -> list[FolderPair]:
    """Every pair of the dataset at ``root`` for ``setting``.

    Raises:
        DataError: ``root`` (param ``data.root``) or a sub-folder is missing, or a pair does not match.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root: folder not found: {root}")
    if setting.name == "cdd11":
        return read_cdd11(root)
    if setting.name == "custom":
        return read_custom(root, test_fraction, seed)
    from unildiff.data import real_readers  # it reads this module's helpers

    if setting.name == "udc":
        return real_readers.read_udc(root)
    raindrop = real_readers.RAINDROP_TASK
    if setting.name == "single" and setting.train_tasks[0].name == raindrop:
        return real_readers.read_raindrop(root)
    if setting.name == "autodir":
        others = Setting(
            setting.name,
            tuple(task for task in setting.train_tasks if task.name != raindrop),
            tuple(task for task in setting.test_tasks if task.name != raindrop),
        )
        return read_promptir(root, others) + real_readers.read_raindrop(_require(root, "RainDrop"), root)
    return read_promptir(root, setting)
