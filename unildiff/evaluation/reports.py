"""Write evaluation outputs: metrics.json (DVC metrics), per-image and per-task CSVs (DVC plots),
a markdown table and one LQ | restored | GT grid per task. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

import numpy as np

from unildiff.utils.atomic import atomic_path, atomic_write_json, atomic_write_text

VARIANTS = ("input", "restored", "no_prompt", "plain_decoder", "no_diffusion", "ceiling")
"""Rows of the report: the degraded input itself, the full model and the inference-time rows."""


@dataclass
class ImageRecord:
    """Scores of one test pair under every variant."""

    pair_id: str
    task: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class GridRow:
    """One row of a task grid: LQ, restored and GT, each [0, 1], (H, W, 3) float32."""

    lq: np.ndarray
    restored: np.ndarray
    gt: np.ndarray


@dataclass
class EvaluationResult:
    """Everything the evaluation measured.

    Attributes:
        records: one per test pair.
        metric_names: metrics that produced numbers, in order.
        skipped: metric name → reason it has no number.
        grids: task → rows for its grid.
    """

    records: list[ImageRecord]
    metric_names: list[str]
    skipped: dict[str, str]
    grids: dict[str, list[GridRow]] = field(default_factory=dict)

    def variants(self) -> list[str]:
        """Variants present in the records, in :data:`VARIANTS` order."""
        present = {variant for record in self.records for variant in record.scores}
        return [variant for variant in VARIANTS if variant in present]

    def tasks(self) -> list[str]:
        """Tasks in first-seen order."""
        return list(dict.fromkeys(record.task for record in self.records))

    def average(self, variant: str, task: str | None = None) -> dict[str, float]:
        """Mean of each metric over the records (of ``task`` if given) for ``variant``."""
        records = [record for record in self.records if task is None or record.task == task]
        values: dict[str, list[float]] = defaultdict(list)
        for record in records:
            for name, value in record.scores.get(variant, {}).items():
                values[name].append(value)
        return {name: round(fmean(values[name]), 6) for name in self.metric_names if values.get(name)}


def metrics_payload(result: EvaluationResult) -> dict:
    """The metrics.json layout: ``{variant: {"avg": {...}, "per_task": {task: {...}}}, ...}``."""
    payload: dict = {}
    for variant in result.variants():
        payload[variant] = {
            "avg": result.average(variant),
            "per_task": {task: result.average(variant, task) for task in result.tasks()},
        }
    seconds = [record.seconds for record in result.records]
    payload["seconds_per_image"] = round(fmean(seconds), 4) if seconds else 0.0
    payload["num_images"] = len(result.records)
    payload["skipped"] = dict(result.skipped)
    return payload


def _csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return stream.getvalue()


def _format(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def per_image_csv(result: EvaluationResult) -> str:
    """One row per pair: ``pair_id, task, <variant>_<metric>..., seconds``."""
    columns = [(variant, name) for variant in result.variants() for name in result.metric_names]
    header = ["pair_id", "task", *[f"{variant}_{name}" for variant, name in columns], "seconds"]
    rows = [
        [
            record.pair_id,
            record.task,
            *[_format(record.scores.get(variant, {}).get(name)) for variant, name in columns],
            f"{record.seconds:.4f}",
        ]
        for record in result.records
    ]
    return _csv_text(header, rows)


def per_task_csv(result: EvaluationResult) -> str:
    """One row per task plus ``average``: ``task, <variant>_<metric>...`` (for DVC bar plots)."""
    columns = [(variant, name) for variant in result.variants() for name in result.metric_names]
    header = ["task", *[f"{variant}_{name}" for variant, name in columns]]
    rows = []
    for task in [*result.tasks(), None]:
        averages = {variant: result.average(variant, task) for variant in result.variants()}
        rows.append([task or "average", *[_format(averages[variant].get(name)) for variant, name in columns]])
    return _csv_text(header, rows)


def metrics_markdown(result: EvaluationResult) -> str:
    """A markdown table of averages per variant, one of restored vs input per task, and the skip list."""
    names = result.metric_names
    lines = ["| variant | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for variant in result.variants():
        averages = result.average(variant)
        lines.append(f"| {variant} | " + " | ".join(_format(averages.get(name)) for name in names) + " |")
    lines += [
        "",
        "| task | " + " | ".join(f"{name} (input → restored)" for name in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for task in result.tasks():
        restored, baseline = result.average("restored", task), result.average("input", task)
        cells = [f"{_format(baseline.get(name))} → {_format(restored.get(name))}" for name in names]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    seconds = [record.seconds for record in result.records]
    lines += [
        "",
        f"Images: {len(result.records)}; seconds per image (restored): "
        f"{fmean(seconds) if seconds else 0.0:.3f}.",
    ]
    for name, reason in result.skipped.items():
        lines.append(f"- {name}: {reason}")
    return "\n".join(lines) + "\n"


def grid_image(rows: Sequence[GridRow], gap: int = 2) -> np.ndarray:
    """Stack rows of LQ | restored | GT into one [0, 1], (H, W, 3) image with white gaps."""
    height = max(row.gt.shape[0] for row in rows)
    width = max(row.gt.shape[1] for row in rows)
    canvas = np.ones((len(rows) * (height + gap) - gap, 3 * (width + gap) - gap, 3), dtype=np.float32)
    for row_index, row in enumerate(rows):
        for column_index, image in enumerate((row.lq, row.restored, row.gt)):
            top, left = row_index * (height + gap), column_index * (width + gap)
            canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas


def write_reports(result: EvaluationResult, reports_dir: str | Path) -> dict:
    """Write metrics.json, metrics.md, per_image.csv, per_task.csv and grids/<task>.png.

    Returns:
        The metrics.json payload.
    """
    from PIL import Image

    reports_dir = Path(reports_dir)
    payload = metrics_payload(result)
    atomic_write_json(reports_dir / "metrics.json", payload)
    atomic_write_text(reports_dir / "metrics.md", metrics_markdown(result))
    atomic_write_text(reports_dir / "per_image.csv", per_image_csv(result))
    atomic_write_text(reports_dir / "per_task.csv", per_task_csv(result))
    for task, rows in result.grids.items():
        if not rows:
            continue
        pixels = np.round(np.clip(grid_image(rows), 0.0, 1.0) * 255.0).astype(np.uint8)
        with atomic_path(reports_dir / "grids" / f"{task}.png") as temporary:
            Image.fromarray(pixels).save(temporary)
    return payload
