"""The ``validate`` step: a Great Expectations suite over the manifest and per-pair content statistics.

One pass decodes every lq and gt once and builds the statistics table
(:mod:`unildiff.data.validate_content`): sizes, gt content (flat, blown out, crushed), PSNR(lq, gt)
against what the task's recipe allows (:mod:`unildiff.data.validate_recipe`), lq/gt alignment, and
same-picture detection across splits and sources (:mod:`unildiff.data.validate_duplicates`). Two pandas
batches are then checked in an ephemeral GX context (:mod:`unildiff.data.validate_suite`):

- ``pairs``: per-pair structure and content expectations, plus per-(task, split) column-aggregate
  expectations (mean and quantiles of PSNR, brightness and size);
- ``task_counts``: one row per (split, task of the setting) with its pair count (0 when absent).

:func:`validate_prepared` returns a :class:`ValidationReport`; :meth:`ValidationReport.raise_for_failure`
raises a :class:`DataError` naming every failed check with its pairs and their evidence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from unildiff.data.manifest import SPLITS, ManifestRow, read_manifest
from unildiff.data.settings import get_setting
from unildiff.data.validate_config import ContentRules, ValidateConfig
from unildiff.data.validate_content import ContentTable, content_table, decode
from unildiff.data.validate_duplicates import same_picture_columns
from unildiff.data.validate_features import thumbnail_png_base64
from unildiff.data.validate_recipe import TaskEnvelope
from unildiff.data.validate_remedies import TOO_FEW_PAIRS
from unildiff.data.validate_report import failure_message, report_html
from unildiff.data.validate_run import ExpectationOutcome, run_checks
from unildiff.data.validate_suite import Check, distribution_checks, pair_checks
from unildiff.errors import DataError
from unildiff.utils.atomic import atomic_write_json, atomic_write_text

__all__ = [
    "ExpectationOutcome",
    "ValidationReport",
    "pair_table",
    "report_html",
    "validate_prepared",
    "write_reports",
]


def pair_table(
    prepared_dir: Path, rows: list[ManifestRow], setting_name: str, rules: ContentRules, task: str = ""
) -> ContentTable:
    """The statistics table: the manifest, per-pair content statistics, split and same-picture columns.
    ``task``: ``data.task`` (the task of ``data.setting: single``)."""
    table = content_table(prepared_dir, rows, get_setting(setting_name, task=task), rules)
    frame = table.frame
    splits_per_source = frame.groupby("source_id")["split"].nunique()
    frame["source_in_both_splits"] = frame["source_id"].map(splits_per_source).gt(1)
    frame["gt_leak"], frame["gt_duplicate"] = same_picture_columns(frame, table.thumbnails, rules)
    return table


def task_count_table(frame: pd.DataFrame, setting_name: str, task: str = "") -> pd.DataFrame:
    """One row per (split, task of the setting) with its pair count; tasks absent from the data count 0.
    ``task``: ``data.task`` (the task of ``data.setting: single``)."""
    setting = get_setting(setting_name, task=task)
    counts = frame.groupby(["split", "task"]).size()
    records = [
        {"split": split, "task": task.name, "pairs": int(counts.get((split, task.name), 0))}
        for split in SPLITS
        for task in setting.tasks(split)
    ]
    return pd.DataFrame(records, columns=["split", "task", "pairs"])


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of the suite.

    Attributes:
        success: every check passed.
        pairs: pairs in the manifest.
        per_task: ``{task: {split: pairs}}`` over :data:`unildiff.data.manifest.SPLITS`.
        outcomes: one per check, in suite order.
        envelopes: what each task's recipe allows (PSNR range, alignment floor), for the report.
        thumbnails: ``pair_id -> (lq, gt)`` base64 PNG thumbnails of the pairs the failures name.
    """

    success: bool
    pairs: int
    per_task: dict[str, dict[str, int]]
    outcomes: tuple[ExpectationOutcome, ...] = ()
    envelopes: tuple[TaskEnvelope, ...] = ()
    thumbnails: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        """The outcomes that failed."""
        return tuple(outcome for outcome in self.outcomes if not outcome.success)

    @property
    def failed_pairs(self) -> tuple[str, ...]:
        """The pairs the failed per-pair checks name (up to ``max_examples`` each), in order of mention."""
        pairs = (pair_id for outcome in self.failures if not outcome.group for pair_id in outcome.pair_ids)
        return tuple(dict.fromkeys(pairs))

    @property
    def shown_pairs(self) -> tuple[str, ...]:
        """Every pair a failure shows: the failed pairs and the extremes of failed groups."""
        return tuple(dict.fromkeys(pair_id for outcome in self.failures for pair_id in outcome.pair_ids))

    def metrics(self) -> dict[str, Any]:
        """A DVC-metrics payload: success, counts, failed checks and pairs."""
        return {
            "success": self.success,
            "pairs": self.pairs,
            "expectations": len(self.outcomes),
            "failed_expectations": len(self.failures),
            "failed_pairs": len(self.failed_pairs),
            "per_task": self.per_task,
        }

    def raise_for_failure(self, html_hint: str = "") -> None:
        """Raise DataError naming every failed check, its offending pairs and their evidence (one line)."""
        if not self.success:
            raise DataError(failure_message(self, html_hint))


def _thumbnails(
    prepared_dir: Path, rows: list[ManifestRow], pair_ids: tuple[str, ...], long_side: int
) -> dict[str, tuple[str | None, str | None]]:
    by_id = {row.pair_id: row for row in rows}
    thumbnails: dict[str, tuple[str | None, str | None]] = {}
    for pair_id in pair_ids:
        row = by_id.get(pair_id)
        if row is None:
            continue
        images = (decode(prepared_dir / row.lq_path), decode(prepared_dir / row.gt_path))
        lq, gt = (thumbnail_png_base64(image, long_side) if image is not None else None for image in images)
        thumbnails[pair_id] = (lq, gt)
    return thumbnails


def validate_prepared(
    prepared_dir: str | os.PathLike,
    setting_name: str,
    config: ValidateConfig,
    task: str = "",
) -> ValidationReport:
    """Run the GX suite over the prepared dir of ``setting_name``.

    Args:
        prepared_dir: the output of ``prepare`` (holds ``manifest.csv``).
        setting_name: ``data.setting``; its tasks are the allowed set and give each pair's recipe.
        config: the ``validate`` params (counts, examples quoted per failure, and ``content``: the content
            and distribution thresholds).
        task: ``data.task``, the task of ``data.setting: single`` (empty for the other settings).

    Returns:
        The report (call ``raise_for_failure`` to turn a failure into a DataError).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    prepared_dir = Path(prepared_dir)
    rules = config.content
    setting = get_setting(setting_name, task=task)  # unknown settings fail early, listing the valid ones
    rows = read_manifest(prepared_dir)
    table = pair_table(prepared_dir, rows, setting_name, rules, task)
    frame = table.frame
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    checks = pair_checks(list(setting.task_names), rules) + distribution_checks(
        frame, table.references, rules
    )
    outcomes = run_checks(context, "pairs", frame, checks, ["pair_id"], config.max_examples)
    minimum = gx.expectations.ExpectColumnValuesToBeBetween(
        column="pairs", min_value=config.min_pairs_per_task
    )
    counts = task_count_table(frame, setting_name, task)
    count_check = Check("too few pairs for a task and split", minimum, TOO_FEW_PAIRS, ("pairs",))
    outcomes += run_checks(
        context, "task_counts", counts, [count_check], ["split", "task"], config.max_examples
    )
    per_task: dict[str, dict[str, int]] = {}
    for (task, split), count in frame.groupby(["task", "split"]).size().items():
        per_task.setdefault(str(task), {name: 0 for name in SPLITS})[str(split)] = int(count)
    report = ValidationReport(
        success=all(outcome.success for outcome in outcomes),
        pairs=len(rows),
        per_task=per_task,
        outcomes=tuple(outcomes),
        envelopes=tuple(table.envelopes.values()),
    )
    pair_ids = report.shown_pairs
    if not pair_ids:
        return report
    thumbnails = _thumbnails(prepared_dir, rows, pair_ids, rules.thumbnail_size)
    return ValidationReport(
        report.success, report.pairs, per_task, report.outcomes, report.envelopes, thumbnails
    )


def write_reports(
    report: ValidationReport, json_path: str | os.PathLike, html_path: str | os.PathLike
) -> None:
    """Write the metrics JSON and the HTML page atomically."""
    atomic_write_json(json_path, report.metrics())
    atomic_write_text(html_path, report_html(report))
