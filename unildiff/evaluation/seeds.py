"""Results over training seeds: mean ± std per task, and paired-bootstrap intervals between variants.

A result counts only when it holds across training seeds. Each ``dvc repro evaluate`` (or
``dvc exp run -S train.seed=N evaluate``) writes ``reports/per_image.csv``; this module reads one such
file per run and reports:

- per variant (input, restored, the ablation rows) and task, the mean over the run's images, then the
  mean ± sample std of those over the runs;
- paired differences between two variants (``restored`` − ``no_diffusion``, …): per image, averaged
  over the runs, then a percentile bootstrap over the images (Efron & Tibshirani 1993, ch. 13) for a
  95 % interval of the mean difference.

Inputs are the CSV files only; nothing here runs a model.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, stdev

import numpy as np

from unildiff.errors import DataError

#: Paired comparisons reported by default: (variant, reference). A pair is skipped when a run lacks it.
DEFAULT_COMPARISONS = (
    ("restored", "input"),
    ("restored", "no_diffusion"),
    ("restored", "no_prompt"),
    ("restored", "plain_decoder"),
    ("ceiling", "restored"),
)


@dataclass(frozen=True)
class RunScores:
    """One evaluation run's per-image scores (``reports/per_image.csv``).

    Attributes:
        name: The run's label (e.g. ``seed0``).
        tasks: Task of each pair id.
        columns: ``<variant>_<metric>`` → {pair id: score}.
    """

    name: str
    tasks: dict[str, str]
    columns: dict[str, dict[str, float]]

    def variants(self, metric: str) -> list[str]:
        """The variants that have ``metric`` in this run, in the CSV's order."""
        suffix = f"_{metric}"
        return [column[: -len(suffix)] for column in self.columns if column.endswith(suffix)]


@dataclass(frozen=True)
class Interval:
    """Mean paired difference and its bootstrap interval, in the metric's unit."""

    mean: float
    low: float
    high: float
    images: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the whole interval lies on one side of 0."""
        return self.low > 0 or self.high < 0


def read_per_image(path: str | Path, name: str) -> RunScores:
    """Read a ``per_image.csv`` written by the evaluate stage.

    Raises:
        DataError: the file is missing, empty, or lacks ``pair_id``/``task`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"per-image scores of run {name!r} not found: {path}")
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or "pair_id" not in rows[0] or "task" not in rows[0]:
        raise DataError(f"{path} has no per-image rows with pair_id and task columns")
    score_columns = [key for key in rows[0] if key not in ("pair_id", "task", "seconds")]
    columns: dict[str, dict[str, float]] = {key: {} for key in score_columns}
    for row in rows:
        for key in score_columns:
            if row[key] not in ("", None):
                try:
                    columns[key][row["pair_id"]] = float(row[key])
                except ValueError as error:
                    raise DataError(f"{path}: {key} of {row['pair_id']} is not a number") from error
    return RunScores(name, {row["pair_id"]: row["task"] for row in rows}, columns)


def _common_pairs(runs: Sequence[RunScores], columns: Sequence[str]) -> list[str]:
    """Pair ids present in every run for every column (sorted); all runs must score the same images."""
    pair_sets = [set(run.columns.get(column, {})) for run in runs for column in columns]
    common = set.intersection(*pair_sets) if pair_sets else set()
    return sorted(common)


def seed_table(runs: Sequence[RunScores], metric: str) -> dict[str, dict[str, dict[str, float]]]:
    """Mean ± std over runs of each variant's per-task (and ``avg``) mean ``metric``.

    Returns:
        variant → task (and ``avg``) → {"mean", "std", "runs": number of runs, "min", "max"}; the std is
        the sample std over runs (0 for a single run).
    """
    if not runs:
        raise DataError("no runs to summarise")
    variants = [
        variant
        for variant in runs[0].variants(metric)
        if all(f"{variant}_{metric}" in run.columns for run in runs)
    ]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for variant in variants:
        column = f"{variant}_{metric}"
        pairs = _common_pairs(runs, [column])
        if not pairs:
            raise DataError(f"no image has {column} in every run ({', '.join(run.name for run in runs)})")
        tasks = sorted({runs[0].tasks[pair] for pair in pairs})
        rows = {}
        for task in [*tasks, "avg"]:
            chosen = [pair for pair in pairs if task == "avg" or runs[0].tasks[pair] == task]
            per_run = [fmean(run.columns[column][pair] for pair in chosen) for run in runs]
            rows[task] = {
                "mean": fmean(per_run),
                "std": stdev(per_run) if len(per_run) > 1 else 0.0,
                "min": min(per_run),
                "max": max(per_run),
                "runs": len(per_run),
            }
        table[variant] = rows
    return table


def paired_bootstrap(differences: np.ndarray, draws: int = 10_000, seed: int = 0) -> Interval:
    """95 % percentile-bootstrap interval of the mean of paired ``differences`` (one per image).

    Args:
        differences: (N,) per-image differences (variant − reference), N ≥ 2.
        draws: Bootstrap resamples.
        seed: Seed of the resampling.
    """
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 1 or len(differences) < 2:
        raise DataError(f"a paired bootstrap needs at least 2 images, got {differences.shape}")
    generator = np.random.default_rng(seed)
    indices = generator.integers(0, len(differences), size=(draws, len(differences)))
    means = differences[indices].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(differences.mean()), float(low), float(high), len(differences))


def compare(
    runs: Sequence[RunScores],
    variant: str,
    reference: str,
    metric: str,
    reference_runs: Sequence[RunScores] | None = None,
    draws: int = 10_000,
    seed: int = 0,
) -> Interval | None:
    """Paired interval of ``variant`` − ``reference`` (per image, averaged over runs, then bootstrapped).

    Args:
        runs: Runs that hold ``variant``.
        variant: Row name, e.g. ``restored``.
        reference: Row name, e.g. ``no_diffusion``.
        metric: ``psnr`` or ``ssim``.
        reference_runs: Runs that hold ``reference`` when it comes from other runs (a trained ablation);
            ``None`` takes it from ``runs``.
        draws: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        The interval, or ``None`` when a run lacks one of the two rows.
    """
    reference_runs = list(reference_runs) if reference_runs is not None else list(runs)
    column, reference_column = f"{variant}_{metric}", f"{reference}_{metric}"
    if any(column not in run.columns for run in runs) or any(
        reference_column not in run.columns for run in reference_runs
    ):
        return None
    pairs = sorted(
        set(_common_pairs(runs, [column])) & set(_common_pairs(reference_runs, [reference_column]))
    )
    if not pairs:
        raise DataError(f"no image is scored in every run for {variant} and {reference}")
    values = np.array([[run.columns[column][pair] for pair in pairs] for run in runs]).mean(axis=0)
    references = np.array(
        [[run.columns[reference_column][pair] for pair in pairs] for run in reference_runs]
    ).mean(axis=0)
    return paired_bootstrap(values - references, draws, seed)


def format_mean_std(row: dict[str, float], digits: int) -> str:
    """``mean ± std`` with ``digits`` decimals (``mean`` alone for one run)."""
    if row["runs"] < 2 or math.isnan(row["std"]):
        return f"{row['mean']:.{digits}f}"
    return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"


def seed_report(
    runs: Sequence[RunScores],
    ablations: dict[str, Sequence[RunScores]] | None = None,
    metrics: Sequence[str] = ("psnr", "ssim"),
    draws: int = 10_000,
) -> tuple[str, dict]:
    """The seed report as markdown and as a JSON-ready dict.

    Args:
        runs: One evaluation run per training seed of the full model.
        ablations: Trained ablations: name → their runs (their ``restored`` row is compared with the
            full model's ``restored``, image by image).
        metrics: Metrics to report (each must be a column suffix of the CSVs).
        draws: Bootstrap resamples per interval.
    """
    ablations = dict(ablations or {})
    payload: dict = {"runs": [run.name for run in runs], "tables": {}, "intervals": [], "checks": {}}
    lines = [f"# Results over {len(runs)} training runs ({', '.join(run.name for run in runs)})", ""]
    for metric in metrics:
        table = seed_table(runs, metric)
        payload["tables"][metric] = table
        tasks = [task for task in next(iter(table.values()))]
        lines += [f"## {metric.upper()}: mean ± std over runs", ""]
        lines += ["| variant | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
        digits = 2 if metric == "psnr" else 4
        for variant, rows in table.items():
            lines.append(
                f"| {variant} | " + " | ".join(format_mean_std(rows[t], digits) for t in tasks) + " |"
            )
        lines.append("")
    if ablations:
        lines += ablation_lines(runs, ablations, metrics, payload)
    lines += ["## Each run (average over the test images)", ""]
    lines += ["| run | " + " | ".join(f"input {m} | restored {m}" for m in metrics) + " |"]
    lines.append("|---" * (1 + 2 * len(metrics)) + "|")
    for run in runs:
        cells = []
        for metric in metrics:
            single = seed_table([run], metric)
            cells += [f"{single['input']['avg']['mean']:.4f}", f"{single['restored']['avg']['mean']:.4f}"]
        lines.append(f"| {run.name} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired differences (per image, averaged over runs; 95 % bootstrap over images)", ""]
    lines += ["| difference | metric | mean | 95 % interval | excludes 0 |", "|---|---|---|---|---|"]
    comparisons = [(variant, reference, runs, None) for variant, reference in DEFAULT_COMPARISONS]
    for name, ablation in ablations.items():
        paired = matching_runs(runs, ablation)
        label = f"{name} (trained, {', '.join(run.name for run in paired)})"
        comparisons.append(("restored", label, paired, ablation))
    for variant, reference, full_runs, reference_runs in comparisons:
        for metric in metrics:
            reference_row = "restored" if reference_runs is not None else reference
            interval = compare(full_runs, variant, reference_row, metric, reference_runs, draws)
            if interval is None:
                continue
            payload["intervals"].append(
                {"variant": variant, "reference": reference, "metric": metric, **vars(interval)}
            )
            lines.append(
                f"| {variant} − {reference} | {metric} | {interval.mean:+.4f} | "
                f"[{interval.low:+.4f}, {interval.high:+.4f}] | {'yes' if interval.excludes_zero else 'no'} |"
            )
    payload["checks"] = restoration_checks(runs, payload["tables"])
    lines += ["", "## Acceptance checks", ""]
    lines += [f"- {'pass' if passed else 'FAIL'}: {name}" for name, passed in payload["checks"].items()]
    return "\n".join(lines) + "\n", payload


def matching_runs(runs: Sequence[RunScores], ablation: Sequence[RunScores]) -> list[RunScores]:
    """The full-model runs of the seeds a trained ablation was run for.

    An ablation run named ``NAME:seed0`` (the CSV's stem after the colon) is compared with the full run
    ``seed0``, so an ablation trained for one seed is not held against the mean of other seeds.

    Raises:
        DataError: an ablation run names a seed that has no full-model run.
    """
    by_name = {run.name: run for run in runs}
    stems = [run.name.partition(":")[2] or run.name for run in ablation]
    missing = [stem for stem in stems if stem not in by_name]
    if missing:
        raise DataError(
            f"trained ablation runs {missing} have no full-model run of the same name "
            f"(full runs: {sorted(by_name)}); name the CSVs after the seed, e.g. seed0.csv"
        )
    return [by_name[stem] for stem in stems]


def ablation_lines(
    runs: Sequence[RunScores],
    ablations: dict[str, Sequence[RunScores]],
    metrics: Sequence[str],
    payload: dict,
) -> list[str]:
    """Markdown table of the ``restored`` row of the full model and of each trained ablation.

    Per task (first metric) and on average (every metric): the mean ± std over each one's own runs.
    The tables also go to ``payload["ablations"]``: name → metric → task → {"mean", "std", ...}.
    """
    rows = {"full model": {metric: seed_table(runs, metric)["restored"] for metric in metrics}}
    for name, ablation_runs in ablations.items():
        rows[name] = {metric: seed_table(ablation_runs, metric)["restored"] for metric in metrics}
    payload["ablations"] = {name: row for name, row in rows.items() if name != "full model"}
    first = metrics[0]
    tasks = [task for task in rows["full model"][first] if task != "avg"]
    lines = ["## Trained ablations: the `restored` row of each, mean ± std over its runs", ""]
    header = [f"{task} {first}" for task in tasks] + [f"avg {metric}" for metric in metrics]
    lines += ["| run | runs | " + " | ".join(header) + " |", "|---" * (len(header) + 2) + "|"]
    for name, row in rows.items():
        digits = {metric: 2 if metric == "psnr" else 4 for metric in metrics}
        cells = [format_mean_std(row[first][task], digits[first]) for task in tasks]
        cells += [format_mean_std(row[metric]["avg"], digits[metric]) for metric in metrics]
        lines.append(f"| {name} | {row[first]['avg']['runs']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def restoration_checks(runs: Sequence[RunScores], tables: dict) -> dict[str, bool]:
    """The acceptance checks that per-image scores can decide.

    - every task: restored > input in PSNR and SSIM on the mean over runs;
    - every run: restored > input on the average PSNR;
    - restored beats no_diffusion by ≥ 0.3 dB on the mean over runs (when that row exists).
    """
    checks: dict[str, bool] = {}
    for metric in ("psnr", "ssim"):
        table = tables.get(metric)
        if not table or "restored" not in table or "input" not in table:
            continue
        for task, row in table["restored"].items():
            if task != "avg":
                checks[f"{task}: restored > input in {metric} (mean over runs)"] = (
                    row["mean"] > table["input"][task]["mean"]
                )
    if "psnr" in tables:
        for run in runs:
            single = seed_table([run], "psnr")
            checks[f"{run.name}: restored > input in average psnr"] = (
                single["restored"]["avg"]["mean"] > single["input"]["avg"]["mean"]
            )
        table = tables["psnr"]
        if "no_diffusion" in table:
            checks["restored ≥ no_diffusion + 0.3 dB (average psnr, mean over runs)"] = (
                table["restored"]["avg"]["mean"] - table["no_diffusion"]["avg"]["mean"] >= 0.3
            )
    return checks
