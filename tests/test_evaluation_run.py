"""End-to-end evaluation on a fresh tiny model and a hand-made prepared folder (2 tasks, 32×32)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch
from typer.testing import CliRunner

from unildiff.cli import app
from unildiff.data.manifest import ManifestRow, manifest_text
from unildiff.evaluation.evaluate import EvaluateConfig, evaluate_model
from unildiff.evaluation.reports import write_reports


def _prepared(folder):
    rng = np.random.default_rng(0)
    rows = []
    for index, (task, prompt) in enumerate(
        [("rain", "remove rain"), ("haze", "remove haze"), ("rain", "remove rain")]
    ):
        gt = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        lq = np.clip(gt.astype(int) + rng.integers(-40, 40, gt.shape), 0, 255).astype(np.uint8)
        for kind, image in (("lq", lq), ("gt", gt)):
            (folder / "test" / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / "test" / kind / f"p{index}.png"), image)
        rows.append(
            ManifestRow(
                f"p{index}",
                "test",
                task,
                task,
                prompt,
                f"s{index}",
                32,
                32,
                f"test/lq/p{index}.png",
                f"test/gt/p{index}.png",
            )
        )
    (folder / "manifest.csv").write_text(manifest_text(rows))
    return folder


def test_evaluate_writes_every_variant_and_skips_learned_metrics(tmp_path, monkeypatch, tiny_model_folder):
    from unildiff import UniLDiffPipeline

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    pipeline = UniLDiffPipeline.from_pretrained(tiny_model_folder)
    config = EvaluateConfig(metrics=("psnr", "ssim", "lpips"), max_images=2, grid_images=1)
    result = evaluate_model(pipeline, _prepared(tmp_path / "prepared"), config, show_progress=False)
    payload = write_reports(result, tmp_path / "reports")
    assert set(payload) >= {"input", "restored", "no_prompt", "plain_decoder", "seconds_per_image", "skipped"}
    assert payload["num_images"] == 2 and sorted(payload["restored"]["per_task"]) == ["haze", "rain"]
    assert set(payload["restored"]["avg"]) == {"psnr", "ssim"}
    assert "lpips" in payload["skipped"] and payload["seconds_per_image"] > 0
    assert json.loads((tmp_path / "reports" / "metrics.json").read_text()) == payload
    assert (tmp_path / "reports" / "grids" / "rain.png").is_file()


def test_cli_evaluate_unknown_metric_and_missing_model(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--metric", "fid", "--model", str(tmp_path)])
    assert result.exit_code == 1 and "unknown metric 'fid'" in result.output and "psnr" in result.output
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "none")])
    assert result.exit_code == 1 and "dvc repro package" in result.output
    result = runner.invoke(app, ["evaluate", "--split", "train"])
    assert result.exit_code == 1 and "split must be 'val' or 'test'" in result.output


def test_cli_restore_missing_model_names_the_stage(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    result = CliRunner().invoke(
        app, ["restore", str(image), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "no_model")]
    )
    assert result.exit_code == 1 and "dvc repro package" in result.output and "no_model" in result.output
    result = CliRunner().invoke(
        app, ["restore", str(image), "-o", str(tmp_path / "out"), "--model", str(tmp_path)]
    )
    assert result.exit_code == 1 and "no model_index.json" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_evaluate_samples_with_the_model_settings(tmp_path, tiny_model_folder):
    arguments = [
        "evaluate",
        "--prepared", str(_prepared(tmp_path / "prepared")),
        "--reports", str(tmp_path / "reports"),
        "--metric", "psnr",
        "--max-images", "1",
        "--model", str(tiny_model_folder),
    ]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "reports" / "metrics.json").read_text())["num_images"] == 1
