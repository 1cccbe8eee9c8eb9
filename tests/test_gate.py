"""The metric-regression gate: library comparison and ``unildiff check-metrics``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from unildiff.cli import app
from unildiff.errors import ConfigError
from unildiff.gate import GateRule, check_metrics, flatten_metrics

RULES = (GateRule("restored.avg.psnr", "higher", 0.1), GateRule("restored.avg.lpips", "lower", 0.01))
METRICS = {"restored": {"avg": {"psnr": 25.0, "lpips": 0.30}}, "skipped": {"niqe": "skipped: weights"}}


def test_flatten_keeps_numbers_only():
    assert flatten_metrics(METRICS) == {"restored.avg.psnr": 25.0, "restored.avg.lpips": 0.30}


def test_equal_and_within_tolerance_pass_worse_fails():
    baseline = flatten_metrics(METRICS)
    assert not any(result.failed for result in check_metrics(baseline, baseline, RULES))
    slightly = {"restored.avg.psnr": 24.95, "restored.avg.lpips": 0.305}
    assert not any(result.failed for result in check_metrics(baseline, slightly, RULES))
    worse = {"restored.avg.psnr": 24.0, "restored.avg.lpips": 0.35}
    statuses = [result.status for result in check_metrics(baseline, worse, RULES)]
    assert statuses == ["regressed", "regressed"]
    better = {"restored.avg.psnr": 26.0, "restored.avg.lpips": 0.2}
    assert [result.status for result in check_metrics(baseline, better, RULES)] == ["ok", "ok"]
    assert [result.status for result in check_metrics(baseline, {}, RULES)] == ["missing", "missing"]
    assert [result.status for result in check_metrics({}, worse, RULES)] == ["not measured"] * 2


def test_bad_rule_names_the_metric():
    with pytest.raises(ConfigError, match="restored.avg.psnr"):
        GateRule("restored.avg.psnr", "up")


def _write(tmp_path, current):
    (tmp_path / "params.yaml").write_text(
        "gate:\n  metrics_file: metrics.json\n  rules:\n"
        "    - {metric: restored.avg.psnr, direction: higher, tolerance: 0.1}\n"
        "    - {metric: restored.avg.lpips, direction: lower, tolerance: 0.01}\n"
    )
    (tmp_path / "baseline.json").write_text(json.dumps(METRICS))
    (tmp_path / "metrics.json").write_text(json.dumps(current))


def _check(tmp_path):
    return CliRunner().invoke(
        app,
        [
            "check-metrics",
            "--baseline-file",
            str(tmp_path / "baseline.json"),
            "--params",
            str(tmp_path / "params.yaml"),
            "--metrics-file",
            str(tmp_path / "metrics.json"),
        ],
    )


def test_cli_passes_on_equal_metrics(tmp_path):
    _write(tmp_path, METRICS)
    result = _check(tmp_path)
    assert result.exit_code == 0, result.output
    assert "passed" in result.output


def test_cli_fails_on_worse_metrics_and_names_them(tmp_path):
    _write(tmp_path, {"restored": {"avg": {"psnr": 20.0, "lpips": 0.30}}})
    result = _check(tmp_path)
    assert result.exit_code == 1
    assert "restored.avg.psnr" in result.output and "regressed" in result.output


def test_cli_names_unknown_gate_param(tmp_path):
    _write(tmp_path, METRICS)
    (tmp_path / "params.yaml").write_text("gate:\n  rulez: []\n")
    result = _check(tmp_path)
    assert result.exit_code == 1 and "gate.rulez" in result.output
