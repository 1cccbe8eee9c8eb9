"""``unildiff gpu-acceptance`` on a host without CUDA: every GPU check is skipped with its reason, the
report is written and the command exits 0. (On a CUDA host the same command runs the checks; the
``gpu``-marked test runs it there.)"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from unildiff.cli import app

CHECKS = {"torch_bf16_restoration", "tensorrt", "training_steps"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-skipping path needs a host without CUDA")
def test_without_cuda_every_check_is_skipped_with_the_reason(tmp_path):
    report_path = tmp_path / "reports" / "gpu_acceptance.json"
    result = CliRunner().invoke(app, ["gpu-acceptance", "--output", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert set(report["checks"]) == CHECKS
    for name, check in report["checks"].items():
        assert check["status"] == "skipped", name
        assert "CUDA is not available" in check["reason"], name
        assert f"{name}: skipped (CUDA is not available" in result.output
    assert report["passed"] is True and report["host"]["cuda"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_cuda_host_the_checks_run_and_pass(tmp_path):  # pragma: no cover - needs a GPU
    report_path = tmp_path / "gpu_acceptance.json"
    result = CliRunner().invoke(app, ["gpu-acceptance", "--output", str(report_path), "--size", "512"])
    report = json.loads(report_path.read_text())
    assert report["checks"]["torch_bf16_restoration"]["status"] == "passed", report
    assert report["checks"]["training_steps"]["status"] == "passed", report
    assert result.exit_code == 0, result.output
