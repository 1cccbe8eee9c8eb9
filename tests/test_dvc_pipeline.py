"""Smoke run of the whole DVC pipeline (every stage of dvc.yaml) on the smoke configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_pipeline
from tests.smoke_repo import REPO_ROOT, run

pytestmark = pytest.mark.slow


def _declared_stages() -> list[str]:
    return list(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"])


@pytest.fixture(scope="module")
def smoke_repo(smoke_pipeline: Path) -> Path:
    """The session's smoke run (``tests/conftest.py``), shared with other workers: only read it."""
    return smoke_pipeline


def test_every_stage_ran_and_is_up_to_date(smoke_repo: Path) -> None:
    lock = yaml.safe_load((smoke_repo / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(_declared_stages())
    status = json.loads(run(["dvc", "status", "--json", "dvc.yaml"], smoke_repo).stdout or "{}")
    assert status == {}, f"pipeline not up to date after repro: {status}"


def test_second_repro_runs_nothing(smoke_repo: Path, tmp_path: Path) -> None:
    repo = copy_pipeline(smoke_repo, tmp_path / "repo")  # another worker may be copying the shared run
    output = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in output, output


def test_metrics_have_restored_and_baseline_rows(smoke_repo: Path) -> None:
    metrics_path = smoke_repo / "reports" / "metrics.json"
    if "evaluate" not in _declared_stages():
        pytest.skip("the evaluate stage is not declared in dvc.yaml")
    metrics = json.loads(metrics_path.read_text())
    for row in ("restored", "input"):
        assert row in metrics, f"metrics.json lacks the {row!r} row: {sorted(metrics)}"
        assert 0.0 < metrics[row]["avg"]["psnr"] < 100.0
        assert 0.0 < metrics[row]["avg"]["ssim"] <= 1.0


def test_bench_timed_each_backend_in_its_own_process(smoke_repo: Path) -> None:
    report = json.loads((smoke_repo / "reports" / "bench.json").read_text())
    assert report["process_per_backend"] is True
    assert {"torch", "onnxruntime"} <= set(report["end_to_end"])
    assert "tensorrt" in report["skipped"] or "tensorrt" in report["end_to_end"]
    for backend in ("torch", "onnxruntime"):
        assert report["end_to_end"][backend]["32px_2steps"]["median_ms"] > 0
    assert report["speedup_vs_torch"]["onnxruntime"]["32px_2steps"] > 0


def _comparable(report: dict) -> dict:
    """A bench report without what a second run measures differently (times, memory, host load)."""
    timed = {
        "median_ms",
        "images_per_s",
        "loop_overhead_percent",
        "achieved_gflops_per_s",
        "seconds_per_megapixel",
    }
    timed |= {"peak_memory_mb", "median_ms_rounds", "min_ms", "max_ms", "mean_ms", "std_ms", "iqr_ms"}

    def strip(value):
        if isinstance(value, dict):
            return {
                key: strip(item) for key, item in value.items() if key not in timed and "speedup" not in key
            }
        return value

    return strip({key: value for key, value in report.items() if key != "host"})


def test_bench_cli_writes_the_stage_report_for_the_same_inputs(smoke_repo: Path, tmp_path: Path) -> None:
    """`unildiff bench` with the `bench` params as flags gives the stage's report (timings aside): both
    open the model folder and restore with its recorded settings."""
    params = yaml.safe_load((smoke_repo / "params.yaml").read_text())["bench"]
    flags = [f"--size={size}" for size in params["sizes"]] + [f"--steps={steps}" for steps in params["steps"]]
    flags += [f"--backend={backend}" for backend in params["backends"]]
    for name in ("repeats", "rounds", "warmup", "photo_width", "photo_height", "photo_repeats"):
        flags.append(f"--{name.replace('_', '-')}={params[name]}")
    output = tmp_path / "bench.json"
    run(["unildiff", "bench", *flags, "--output", str(output)], smoke_repo)
    stage = json.loads((smoke_repo / "reports" / "bench.json").read_text())
    cli = json.loads(output.read_text())
    assert cli["sampling"]["start"] == stage["sampling"]["start"] and cli["sampling"]["cfg"] == 1.0
    assert _comparable(cli) == _comparable(stage)
