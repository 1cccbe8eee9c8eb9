"""The ``prepare`` step: make lq/gt pairs for a setting and write them with a manifest, atomically.

Output layout (``output_dir``, normally ``data/prepared``)::

    manifest.csv
    {train,val,test}/{lq,gt}/<pair_id>.png
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from unildiff.data.captions import CaptionFinder
from unildiff.data.config import DataConfig
from unildiff.data.imageio import read_image, write_image_into
from unildiff.data.manifest import MANIFEST_NAME, SPLITS, ManifestRow, manifest_text
from unildiff.data.readers import FolderPair, read_folder_pairs
from unildiff.data.settings import Setting, get_setting
from unildiff.data.sources import load_builtin_photos, random_patch, split_sources, weighted_sources
from unildiff.errors import DataError
from unildiff.utils.atomic import atomic_dir


@dataclass(frozen=True)
class Pair:
    """A pair in memory before it is written. Images are [0, 1], (H, W, 3), float32."""

    split: str
    task: str
    degradations: str
    prompt: str
    source_id: str
    lq: np.ndarray
    gt: np.ndarray
    caption: str = ""


def builtin_pairs(config: DataConfig, setting: Setting) -> Iterator[Pair]:
    """Cut patches from the built-in photos and degrade them; test photos never appear in training.

    Every pair draws from its own generator seeded by ``(seed, split, task, index)``, so a pair does not
    depend on how many others are made.
    """
    photos = {photo.source_id: photo for photo in load_builtin_photos(config.source_short_side)}
    train_ids, val_ids, test_ids = split_sources(
        sorted(photos), config.test_fraction, config.seed, config.val_fraction
    )
    train_sources = weighted_sources(train_ids, photos, config.colour_source_weight)
    plan = {
        "train": (train_sources, config.patch_size, config.train_pairs_per_task),
        "val": (val_ids, config.test_patch_size, config.val_pairs_per_task if val_ids else 0),
        "test": (test_ids, config.test_patch_size, config.test_pairs_per_task),
    }
    task_index = {name: index for index, name in enumerate(setting.task_names)}
    for split_index, split in enumerate(SPLITS):
        source_ids, size, count = plan[split]
        for task in setting.tasks(split):
            for index in range(count):
                rng = np.random.default_rng([config.seed, split_index, task_index[task.name], index])
                source_id = source_ids[index % len(source_ids)]
                gt = random_patch(photos[source_id].image, size, rng)
                lq = task.degrade(gt, rng)
                yield Pair(split, task.name, task.degradations, task.prompt, source_id, lq, gt)


def validation_sources(pairs: list[FolderPair], val_fraction: float, seed: int) -> set[str]:
    """The training source ids moved to the validation split: ``ceil(val_fraction * n)`` of the n train
    sources (at least 1, never all of them), drawn with ``seed``; empty for fraction 0."""
    train_sources = sorted({pair.source_id for pair in pairs if pair.split == "train"})
    if val_fraction <= 0 or len(train_sources) < 2:
        return set()
    count = min(len(train_sources) - 1, max(1, int(np.ceil(val_fraction * len(train_sources)))))
    order = np.random.default_rng([seed, 1]).permutation(len(train_sources))
    return {train_sources[index] for index in order[:count]}


def folder_pairs(config: DataConfig, setting: Setting) -> Iterator[Pair]:
    """Read the pairs of a dataset folder; tasks whose lq is synthesised (denoise) get seeded noise.

    The folder's own train/test split is kept; ``data.val_fraction`` of the training sources (by source
    id, so no photo is in two splits) become the validation split. Each pair carries the description the
    folder gives its picture, if any (:mod:`unildiff.data.captions`).
    """
    pairs: list[FolderPair] = read_folder_pairs(config.root, setting, config.test_fraction, config.seed)
    captions = CaptionFinder(Path(config.root))
    val_sources = validation_sources(pairs, config.val_fraction, config.seed)
    task_index = {name: index for index, name in enumerate(setting.task_names)}
    for index, pair in enumerate(pairs):
        split = "val" if pair.split == "train" and pair.source_id in val_sources else pair.split
        task = next(task for task in setting.tasks(pair.split) if task.name == pair.task)
        gt = read_image(pair.gt_path)
        if pair.lq_path is None:
            rng = np.random.default_rng([config.seed, SPLITS.index(split), task_index[task.name], index])
            lq, degradations = task.degrade(gt, rng), task.degradations
        else:
            lq, degradations = read_image(pair.lq_path), "real"
            if lq.shape != gt.shape:
                raise DataError(
                    f"size mismatch: lq {pair.lq_path} is {lq.shape[1]}x{lq.shape[0]}, "
                    f"gt {pair.gt_path} is {gt.shape[1]}x{gt.shape[0]}"
                )
        caption = captions.caption(pair.gt_path, pair.lq_path)
        yield Pair(split, task.name, degradations, task.prompt, pair.source_id, lq, gt, caption)


def expected_pair_count(config: DataConfig, setting: Setting) -> int | None:
    """How many pairs the built-in source makes (None for folders, counted while reading)."""
    if config.source != "builtin":
        return None
    return (
        len(setting.train_tasks) * config.train_pairs_per_task
        + len(setting.test_tasks) * (config.val_pairs_per_task * (config.val_fraction > 0))
        + len(setting.test_tasks) * config.test_pairs_per_task
    )


def prepare_dataset(
    config: DataConfig, output_dir: str | Path, console: Console | None = None
) -> list[ManifestRow]:
    """Make every pair of ``config.setting`` and write them under ``output_dir`` atomically.

    Args:
        config: the ``data`` params.
        output_dir: the prepared dir (replaced whole only once complete).
        console: where progress goes (a quiet console when None).

    Returns:
        The manifest rows, as written to ``<output_dir>/manifest.csv``.

    Raises:
        ConfigError: unknown setting/task. DataError: unreadable, unmatched or missing inputs.
    """
    setting = get_setting(config.setting, config.custom_prompt, config.task)
    if config.setting == "custom" and config.source != "folder":
        raise DataError("data.setting=custom reads pairs from a folder: set data.source=folder and data.root")
    real_only = [task.name for task in setting.train_tasks + setting.test_tasks if not task.synthetic]
    if config.source == "builtin" and real_only:
        raise DataError(
            f"data.setting={config.setting}: task {real_only[0]} has real pairs only (no synthetic recipe); "
            "set data.source=folder and data.root"
        )
    pairs = builtin_pairs(config, setting) if config.source == "builtin" else folder_pairs(config, setting)
    console = console or Console(quiet=True)
    rows: list[ManifestRow] = []
    counters: Counter[tuple[str, str]] = Counter()
    with atomic_dir(output_dir) as temporary, Progress(console=console, transient=True) as progress:
        bar = progress.add_task("prepare", total=expected_pair_count(config, setting))
        for pair in pairs:
            counters[(pair.split, pair.task)] += 1
            pair_id = f"{pair.split}-{pair.task}-{counters[(pair.split, pair.task)] - 1:05d}"
            lq_path = f"{pair.split}/lq/{pair_id}.png"
            gt_path = f"{pair.split}/gt/{pair_id}.png"
            write_image_into(temporary / lq_path, pair.lq)
            write_image_into(temporary / gt_path, pair.gt)
            height, width, _ = pair.gt.shape
            rows.append(
                ManifestRow(pair_id, pair.split, pair.task, pair.degradations, pair.prompt, pair.source_id,
                            height, width, lq_path, gt_path, pair.caption)
            )  # fmt: skip
            progress.advance(bar)
        if not rows:
            raise DataError(f"no pairs found for data.setting={config.setting} (data.source={config.source})")
        (temporary / MANIFEST_NAME).write_text(manifest_text(rows))
    return rows


def task_count_table(rows: list[ManifestRow], title: str = "prepared pairs") -> Table:
    """A rich table of pair counts per task and split, plus the prompt."""
    counts = Counter((row.task, row.split) for row in rows)
    prompts = {row.task: row.prompt for row in rows}
    table = Table(title=title)
    for column in ("task", "prompt", *SPLITS):
        table.add_column(column, justify="right" if column in SPLITS else "left")
    for task in dict.fromkeys(row.task for row in rows):
        table.add_row(task, prompts[task], *(str(counts[(task, split)]) for split in SPLITS))
    table.add_row("total", "", *(str(sum(row.split == split for row in rows)) for split in SPLITS))
    return table
