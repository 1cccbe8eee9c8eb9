"""Metric construction (skip path without weights), unknown metrics, and the report files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from unildiff.errors import ConfigError
from unildiff.evaluation.evaluate import EvaluateConfig
from unildiff.evaluation.metrics import MetricSuite
from unildiff.evaluation.reports import EvaluationResult, GridRow, ImageRecord, write_reports


def test_learned_metrics_without_weights_are_skipped_with_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    suite = MetricSuite(["psnr", "ssim", "lpips", "niqe", "clipiqa"])
    assert suite.names == ["psnr", "ssim"]
    assert set(suite.skipped) == {"lpips", "niqe", "clipiqa"}
    assert str(tmp_path / "hub" / "pyiqa") in suite.skipped["lpips"]
    assert suite.skipped["niqe"].startswith("skipped: weights not found at ")
    gt = torch.rand(1, 3, 32, 32) * 2 - 1
    noisy = (gt + 0.2 * torch.randn_like(gt)).clamp(-1, 1)
    scores = suite.score(noisy, gt)
    assert set(scores) == {"psnr", "ssim"}
    assert scores["psnr"] < suite.score(gt, gt)["psnr"]
    assert 0 < scores["ssim"] < 1


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: psnr, ssim, lpips"):
        EvaluateConfig(metrics=("psnr", "fid"))
    with pytest.raises(ConfigError, match="no_prompt"):
        EvaluateConfig(ablations=("no_decoder",))


def test_reports_are_written(tmp_path):
    records = [
        ImageRecord("a", "rain", {"input": {"psnr": 20.0}, "restored": {"psnr": 24.0}}, 0.5),
        ImageRecord("b", "rain", {"input": {"psnr": 22.0}, "restored": {"psnr": 26.0}}, 1.5),
        ImageRecord("c", "haze", {"input": {"psnr": 10.0}, "restored": {"psnr": 15.0}}, 1.0),
    ]
    image = np.zeros((8, 8, 3), np.float32)
    result = EvaluationResult(
        records,
        ["psnr"],
        {"lpips": "skipped: weights not found at /x"},
        {"rain": [GridRow(image, image + 0.5, image + 1)]},
    )
    payload = write_reports(result, tmp_path)
    assert payload["restored"]["avg"]["psnr"] == pytest.approx(65 / 3, abs=1e-5)
    assert payload["restored"]["per_task"]["rain"]["psnr"] == 25.0
    assert payload["input"]["per_task"]["haze"]["psnr"] == 10.0
    assert payload["seconds_per_image"] == 1.0 and payload["skipped"]["lpips"].startswith("skipped")
    assert json.loads((tmp_path / "metrics.json").read_text()) == payload
    per_task = list(csv.DictReader((tmp_path / "per_task.csv").open()))
    assert [row["task"] for row in per_task] == ["rain", "haze", "average"]
    assert float(per_task[0]["restored_psnr"]) == 25.0
    assert len(list(csv.DictReader((tmp_path / "per_image.csv").open()))) == 3
    assert "| restored | 21.6667 |" in (tmp_path / "metrics.md").read_text()
    from PIL import Image

    assert Image.open(tmp_path / "grids" / "rain.png").size == (3 * 8 + 4, 8)
