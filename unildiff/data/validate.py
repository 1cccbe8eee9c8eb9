"""The ``validate`` step: a Great Expectations suite over the manifest and per-image statistics.

Two pandas batches are checked in an ephemeral GX context:

- ``pairs``: one row per pair — the manifest plus statistics computed here by decoding every image
  (readable, decoded sizes, pixel range) and whether its ``source_id`` also appears in the other split.
- ``task_counts``: one row per (split, task of the setting) with its pair count (0 when absent).

:func:`validate_prepared` returns a :class:`ValidationReport`; :meth:`ValidationReport.raise_for_failure`
raises a :class:`DataError` naming the failing expectation and a few offending rows.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from unildiff.data.config import ValidateConfig
from unildiff.data.manifest import COLUMNS, SPLITS, ManifestRow, read_manifest
from unildiff.data.settings import get_setting
from unildiff.errors import DataError
from unildiff.utils.atomic import atomic_write_json, atomic_write_text


def _image_statistics(path: Path) -> dict[str, Any]:
    """Decoded height, width and value range in [0, 1] of one image; ``readable`` False when it fails."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError):
        return {"readable": False, "height": -1, "width": -1, "min": 0.0, "max": 0.0}
    return {
        "readable": True,
        "height": int(array.shape[0]),
        "width": int(array.shape[1]),
        "min": float(array.min()) / 255.0,
        "max": float(array.max()) / 255.0,
    }


def pair_table(prepared_dir: Path, rows: list[ManifestRow]) -> pd.DataFrame:
    """The manifest plus per-image statistics (``lq_*``/``gt_*`` readable, height, width, min, max)."""
    frame = pd.DataFrame(
        [[getattr(row, column) for column in COLUMNS] for row in rows], columns=list(COLUMNS)
    )
    for side in ("lq", "gt"):
        statistics = [_image_statistics(prepared_dir / getattr(row, f"{side}_path")) for row in rows]
        for key in ("readable", "height", "width", "min", "max"):
            frame[f"{side}_{key}"] = [item[key] for item in statistics]
    splits_per_source = frame.groupby("source_id")["split"].nunique()
    frame["source_in_both_splits"] = frame["source_id"].map(splits_per_source).gt(1)
    return frame


def task_count_table(frame: pd.DataFrame, setting_name: str) -> pd.DataFrame:
    """One row per (split, task of the setting) with its pair count; tasks absent from the data count 0."""
    setting = get_setting(setting_name)
    counts = frame.groupby(["split", "task"]).size()
    records = [
        {"split": split, "task": task.name, "pairs": int(counts.get((split, task.name), 0))}
        for split in SPLITS
        for task in setting.tasks(split)
    ]
    return pd.DataFrame(records, columns=["split", "task", "pairs"])


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation: its GX type, arguments, success and a few offending rows."""

    expectation: str
    arguments: str
    success: bool
    unexpected_count: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of the suite, with per-task counts (``{task: {"train": n, "test": n}}``)."""

    success: bool
    pairs: int
    per_task: dict[str, dict[str, int]]
    outcomes: tuple[ExpectationOutcome, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        """The outcomes that failed."""
        return tuple(outcome for outcome in self.outcomes if not outcome.success)

    def metrics(self) -> dict[str, Any]:
        """A DVC-metrics payload: success, counts, and the number of failed expectations."""
        return {
            "success": self.success,
            "pairs": self.pairs,
            "expectations": len(self.outcomes),
            "failed_expectations": len(self.failures),
            "per_task": self.per_task,
        }

    def raise_for_failure(self) -> None:
        """Raise DataError naming the first failing expectation, its offending rows and how many others."""
        if self.success:
            return
        first = self.failures[0]
        others = f" (+{len(self.failures) - 1} more failing expectation(s))" if len(self.failures) > 1 else ""
        raise DataError(
            f"data validation failed: {first.expectation}({first.arguments}): {first.unexpected_count} "
            f"offending row(s), e.g. {'; '.join(first.examples)}{others}"
        )


def _pair_expectations(setting_name: str) -> list[Any]:
    import great_expectations as gx

    expectations = gx.expectations
    tasks = list(get_setting(setting_name).task_names)
    checks: list[Any] = [
        expectations.ExpectColumnValuesToBeUnique(column="pair_id"),
        expectations.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        expectations.ExpectColumnValuesToBeInSet(column="task", value_set=tasks),
        expectations.ExpectColumnValuesToNotBeNull(column="prompt"),
        expectations.ExpectColumnValuesToBeInSet(column="source_in_both_splits", value_set=[False]),
    ]
    for side in ("lq", "gt"):
        checks += [
            expectations.ExpectColumnValuesToBeInSet(column=f"{side}_readable", value_set=[True]),
            expectations.ExpectColumnPairValuesToBeEqual(column_A="height", column_B=f"{side}_height"),
            expectations.ExpectColumnPairValuesToBeEqual(column_A="width", column_B=f"{side}_width"),
            expectations.ExpectColumnValuesToBeBetween(column=f"{side}_min", min_value=0.0, max_value=1.0),
            expectations.ExpectColumnValuesToBeBetween(column=f"{side}_max", min_value=0.0, max_value=1.0),
        ]
    return checks


def _run_suite(
    context: Any,
    name: str,
    frame: pd.DataFrame,
    checks: list[Any],
    index_columns: list[str],
    max_examples: int,
) -> list[ExpectationOutcome]:  # noqa: E501
    import great_expectations as gx

    asset = context.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name=name)
    batch = asset.add_batch_definition_whole_dataframe(f"{name}_all").get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite", expectations=checks))
    result = batch.validate(
        suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_columns}
    )
    outcomes = []
    for item in result.results:
        arguments = {key: value for key, value in item.expectation_config.kwargs.items() if key != "batch_id"}
        rows = item.result.get("unexpected_index_list") or []
        examples = tuple(
            ", ".join(f"{key}={value}" for key, value in row.items()) if isinstance(row, dict) else str(row)
            for row in rows[:max_examples]
        )
        outcomes.append(
            ExpectationOutcome(
                expectation=item.expectation_config.type,
                arguments=", ".join(f"{key}={value!r}" for key, value in arguments.items()),
                success=bool(item.success),
                unexpected_count=int(item.result.get("unexpected_count") or 0),
                examples=examples,
            )
        )
    return outcomes


def validate_prepared(
    prepared_dir: str | os.PathLike, setting_name: str, config: ValidateConfig
) -> ValidationReport:
    """Run the GX suite over the prepared dir of ``setting_name``.

    Args:
        prepared_dir: the output of ``prepare`` (holds ``manifest.csv``).
        setting_name: ``data.setting``; its tasks are the allowed set.
        config: the ``validate`` params.

    Returns:
        The report (call ``raise_for_failure`` to turn a failure into a DataError).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    prepared_dir = Path(prepared_dir)
    get_setting(setting_name)  # unknown settings fail early, listing the valid ones
    rows = read_manifest(prepared_dir)
    frame = pair_table(prepared_dir, rows)
    counts = task_count_table(frame, setting_name)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    minimum = gx.expectations.ExpectColumnValuesToBeBetween(
        column="pairs", min_value=config.min_pairs_per_task
    )
    outcomes = _run_suite(
        context, "pairs", frame, _pair_expectations(setting_name), ["pair_id"], config.max_examples
    )
    outcomes += _run_suite(context, "task_counts", counts, [minimum], ["split", "task"], config.max_examples)
    per_task: dict[str, dict[str, int]] = {}
    for (task, split), count in frame.groupby(["task", "split"]).size().items():
        per_task.setdefault(str(task), {name: 0 for name in SPLITS})[str(split)] = int(count)
    return ValidationReport(
        success=all(outcome.success for outcome in outcomes),
        pairs=len(rows),
        per_task=per_task,
        outcomes=tuple(outcomes),
    )


def report_html(report: ValidationReport) -> str:
    """A small self-contained HTML page: the verdict, every expectation, and the per-task counts."""
    escape = html.escape
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>UniLDiff data validation</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:3px 8px}.fail{background:#fdd}.ok{background:#dfd}</style></head><body>",
        f"<h1>Data validation: {'PASSED' if report.success else 'FAILED'}</h1>",
        f"<p>{report.pairs} pairs, {len(report.outcomes)} expectations, {len(report.failures)} failed.</p>",
        "<table><tr><th>expectation</th><th>arguments</th><th>result</th><th>unexpected</th><th>examples</th></tr>",
    ]
    for outcome in report.outcomes:
        css = "ok" if outcome.success else "fail"
        lines.append(
            f"<tr class='{css}'><td>{escape(outcome.expectation)}</td><td>{escape(outcome.arguments)}</td>"
            f"<td>{'pass' if outcome.success else 'FAIL'}</td><td>{outcome.unexpected_count}</td>"
            f"<td>{escape('; '.join(outcome.examples))}</td></tr>"
        )
    lines.append("</table><h2>Pairs per task</h2><table><tr><th>task</th><th>train</th><th>test</th></tr>")
    for task, counts in report.per_task.items():
        lines.append(f"<tr><td>{escape(task)}</td><td>{counts['train']}</td><td>{counts['test']}</td></tr>")
    lines.append("</table></body></html>")
    return "\n".join(lines) + "\n"


def write_reports(
    report: ValidationReport, json_path: str | os.PathLike, html_path: str | os.PathLike
) -> None:
    """Write the metrics JSON and the HTML page atomically."""
    atomic_write_json(json_path, report.metrics())
    atomic_write_text(html_path, report_html(report))
