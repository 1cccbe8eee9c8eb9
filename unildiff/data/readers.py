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

from collections import Counter
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


BUILTIN_PLACEHOLDER = Path("data/raw/builtin")
"""``data.root`` of the built-in source: a committed folder holding only a README (docs/data.md)."""


def check_dataset_root(root: Path, repository: Path) -> Path:
    """Refuse a folder-source ``data.root`` that DVC cannot version with the repository.

    ``prepare`` depends on ``data.root`` in ``dvc.yaml``; DVC hashes a folder outside the repository too,
    but keeps no copy of it and records a path that exists only on this machine, so such a root is
    refused with the commands that bring it in.

    Args:
        root: ``data.root`` as written in params (relative to ``repository`` or absolute).
        repository: the repository root (the stage's working directory).

    Returns:
        ``root`` relative to ``repository``.

    Raises:
        ConfigError: ``root`` lies outside ``repository`` (symbolic links resolved), or it is the built-in
            source's placeholder.
    """
    repository = Path(repository).resolve()
    resolved = (repository / root).resolve()
    if not resolved.is_relative_to(repository):
        name = resolved.name or "dataset"
        raise ConfigError(
            f"data.root {root} is outside the repository, so DVC cannot version it: bring it in with "
            f"`dvc import-url {resolved} data/raw/{name}` (or copy it to data/raw/{name} and run "
            f"`dvc add data/raw/{name}`), then set data.root=data/raw/{name}"
        )
    relative = resolved.relative_to(repository)
    if relative == BUILTIN_PLACEHOLDER:
        raise ConfigError(
            f"data.root is {BUILTIN_PLACEHOLDER}, the built-in source's empty placeholder: with "
            "data.source=folder set data.root to your dataset folder (data/raw/<name>, docs/data.md)"
        )
    return relative


@dataclass(frozen=True)
class NamedPair:
    """A pair of a named scoring folder: ``name`` is the lq file stem."""

    name: str
    lq_path: Path
    gt_path: Path


# How lq and gt file names correspond in a scoring folder: same stem; PromptIR's Rain100L
# (rain-N <-> norain-N); SOTS / RESIDE dehazing (<id>_<A>_<beta> <-> <id>, several lq per gt).
_NAME_SCHEMES: tuple[tuple[KeyFunction, KeyFunction, bool], ...] = (
    (lambda stem: stem, lambda stem: stem, True),
    (_derain_lq_key, _derain_gt_key, True),
    (_dehaze_lq_key, lambda stem: stem, False),
)

SCORING_LAYOUTS = (("lq", "gt"), ("input", "target"))
"""Sub-folder pairs a scoring folder may hold (names match case-insensitively)."""


def read_named_pairs(folder: Path) -> list[NamedPair]:
    """The pairs of a folder to score: ``lq/`` + ``gt/`` or ``input/`` + ``target/``, matched by name.

    File names match by stem, or by PromptIR's test-set conventions (``rain-N`` <-> ``norain-N``;
    ``<id>_*`` <-> ``<id>``), whichever matches the most lq files; then every lq must have its gt (and,
    except for the many-to-one dehazing names, every gt its lq).

    Raises:
        DataError: ``folder`` is missing or holds neither layout (or both), or a pair does not match
            (the message names the file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--pairs: folder not found: {folder}")
    layouts = [
        (_child(folder, lq), _child(folder, gt))
        for lq, gt in SCORING_LAYOUTS
        if _child(folder, lq) is not None and _child(folder, gt) is not None
    ]
    if len(layouts) != 1:
        wanted = " or ".join(f"{lq}/ + {gt}/" for lq, gt in SCORING_LAYOUTS)
        found = "both" if layouts else "neither"
        raise DataError(f"--pairs {folder} must hold {wanted} (found {found})")
    lq_dir, gt_dir = layouts[0]
    assert lq_dir is not None and gt_dir is not None
    lq_stems = [path.stem for path in _images(lq_dir)]
    gt_stems = [path.stem for path in _images(gt_dir)]

    def matched(scheme: tuple[KeyFunction, KeyFunction, bool]) -> int:
        gt_keys = {scheme[1](stem) for stem in gt_stems}
        return sum(scheme[0](stem) in gt_keys for stem in lq_stems)

    lq_key, gt_key, one_to_one = max(_NAME_SCHEMES, key=matched)  # the first on a tie: same stem
    pairs = match_pairs(lq_dir, gt_dir, lq_key, gt_key, one_to_one)
    repeated = sorted(name for name, count in Counter(lq.stem for lq, _ in pairs).items() if count > 1)
    if repeated:
        raise DataError(f"two lq images in {lq_dir} share the name {repeated[0]!r}")
    return [NamedPair(lq.stem, lq, gt) for lq, gt in pairs]
