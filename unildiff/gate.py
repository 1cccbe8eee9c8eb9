"""Metric-regression gate: compare workspace metrics with a baseline, per-metric direction and tolerance.

The baseline is either a git revision (read through ``dvc metrics diff --json``) or a JSON file with
the same layout as ``reports/metrics.json`` (what CI commits as its smoke baseline).
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unildiff.errors import ConfigError, DataError, MissingArtifactError

DIRECTIONS = ("higher", "lower")


@dataclass(frozen=True)
class GateRule:
    """One gated metric.

    Attributes:
        metric: dotted key into metrics.json, e.g. ``restored.avg.psnr``.
        direction: ``higher`` (higher is better) or ``lower``.
        tolerance: absolute worsening allowed before the gate fails.
    """

    metric: str
    direction: str = "higher"
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(
                f"gate rule {self.metric}: direction must be one of {DIRECTIONS}, got {self.direction!r}"
            )
        if self.tolerance < 0:
            raise ConfigError(f"gate rule {self.metric}: tolerance must be ≥ 0, got {self.tolerance}")


@dataclass(frozen=True)
class GateConfig:
    """Params ``gate``: the metrics file and the rules."""

    metrics_file: str = "reports/metrics.json"
    rules: tuple[GateRule, ...] = ()


@dataclass(frozen=True)
class GateResult:
    """Outcome for one rule: ``status`` is ``ok``, ``regressed``, ``missing`` or ``not measured``."""

    rule: GateRule
    baseline: float | None
    current: float | None
    status: str

    @property
    def failed(self) -> bool:
        """Whether this rule fails the gate."""
        return self.status in ("regressed", "missing")

    def describe(self) -> str:
        """One line for the console."""
        return (
            f"{self.rule.metric}: baseline {self.baseline} → current {self.current} "
            f"({self.rule.direction} is better, tolerance {self.rule.tolerance}): {self.status}"
        )


def flatten_metrics(payload: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested metrics to ``{"a.b.c": number}``; non-numeric leaves are dropped."""
    flat: dict[str, float] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def read_metrics_file(path: Path) -> dict[str, float]:
    """Read and flatten a metrics JSON file; a missing or broken file names itself."""
    if not path.is_file():
        raise MissingArtifactError(f"metrics file not found: {path} (run `dvc repro evaluate`)")
    try:
        return flatten_metrics(json.loads(path.read_text()))
    except (json.JSONDecodeError, AttributeError) as error:
        raise DataError(f"cannot parse metrics file {path}: {error}") from None


def metrics_from_dvc(revision: str, metrics_file: str) -> tuple[dict[str, float], dict[str, float]]:
    """(baseline at ``revision``, workspace) metrics from ``dvc metrics diff --json --all``."""
    command = ["dvc", "metrics", "diff", revision, "--targets", metrics_file, "--json", "--all"]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise MissingArtifactError("dvc is not installed; use --baseline-file") from None
    if completed.returncode != 0:
        message = (completed.stderr or completed.stdout).strip().splitlines()
        raise DataError(f"`{' '.join(command)}` failed: {message[-1] if message else completed.returncode}")
    diff = json.loads(completed.stdout or "{}")
    baseline: dict[str, float] = {}
    current: dict[str, float] = {}
    for entries in diff.values():
        for key, change in entries.items():
            if isinstance(change.get("old"), (int, float)):
                baseline[key] = float(change["old"])
            if isinstance(change.get("new"), (int, float)):
                current[key] = float(change["new"])
    return baseline, current


def check_metrics(
    baseline: Mapping[str, float], current: Mapping[str, float], rules: Sequence[GateRule]
) -> list[GateResult]:
    """Apply ``rules`` to flattened baseline and current metrics.

    A metric is ``regressed`` when it is worse than the baseline by more than its tolerance (or NaN),
    ``missing`` when the baseline has it and the workspace does not, and ``not measured`` when neither
    has it or only the workspace does.
    """
    results = []
    for rule in rules:
        old, new = baseline.get(rule.metric), current.get(rule.metric)
        if old is None:
            status = "not measured"
        elif new is None:
            status = "missing"
        elif math.isnan(new):
            status = "regressed"
        elif rule.direction == "higher":
            status = "regressed" if new < old - rule.tolerance else "ok"
        else:
            status = "regressed" if new > old + rule.tolerance else "ok"
        results.append(GateResult(rule, old, new, status))
    return results
