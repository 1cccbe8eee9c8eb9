"""The demo's examples: one degraded test crop per task, from the ``prepare`` stage's output.

They come from ``data/prepared/manifest.csv`` (test split), so the page has examples on a fresh clone
after ``dvc repro``, offline. Without prepared data the page simply has none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from unildiff.data.manifest import MANIFEST_NAME, read_manifest


@dataclass(frozen=True)
class Example:
    """One example: the degraded crop, its clean counterpart and the model task to restore it with.

    Attributes:
        task: a key of the model's ``tasks``.
        lq_path: the degraded crop.
        gt_path: the clean crop (for tests and comparisons; the page shows only ``lq_path``).
    """

    task: str
    lq_path: Path
    gt_path: Path


def example_crops(prepared_dir: Path, tasks: Mapping[str, str]) -> list[Example]:
    """The first test pair of each task in ``tasks`` (in the order of ``tasks``), where one exists.

    A manifest row belongs to a task when its ``task`` column is the task's name, or, for settings that
    name tasks differently, when its prompt is the task's prompt.

    Args:
        prepared_dir: the ``prepare`` stage's output folder (``data/prepared``).
        tasks: the model's task name -> prompt mapping (``pipe.tasks``).

    Returns:
        Up to one example per task; empty when there is no manifest.
    """
    prepared_dir = Path(prepared_dir)
    if not (prepared_dir / MANIFEST_NAME).is_file():
        return []
    rows = [row for row in read_manifest(prepared_dir) if row.split == "test"]
    examples: list[Example] = []
    for name, prompt in tasks.items():
        row = next((row for row in rows if row.task == name), None)
        row = row or next((row for row in rows if row.prompt == prompt), None)
        if row is None:
            continue
        lq, gt = prepared_dir / row.lq_path, prepared_dir / row.gt_path
        if lq.is_file():
            examples.append(Example(name, lq, gt))
    return examples
