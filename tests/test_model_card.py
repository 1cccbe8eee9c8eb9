"""The model card (models/unildiff/README.md): generated from the metrics and the folder's settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from unildiff.card import CardFacts, render_model_card
from unildiff.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
FACTS = CardFacts(
    "tiny", "aio3", "builtin", train_photos=11, test_pairs=40, test_size="128×128", split="test"
)
INDEX = {
    "tasks": [["denoise_15", "remove noise"], ["derain", "remove rain"], ["dehaze", "remove haze"]],
    "start": {"mode": "lq", "timestep": 49, "noise": 0.0, "training_fraction": 1.0},
    "sampling": {"steps": 20, "cfg": 1.0},
}


def _metrics() -> dict:
    return json.loads((REPO_ROOT / "reports" / "metrics.json").read_text())


def test_card_has_hub_front_matter_with_the_measured_metrics():
    metrics = _metrics()
    card = render_model_card(INDEX, metrics, None, FACTS)
    front = yaml.safe_load(card.split("---")[1])
    assert front["pipeline_tag"] == "image-to-image" and front["license"] == "apache-2.0"
    values = {entry["type"]: entry["value"] for entry in front["model-index"][0]["results"][0]["metrics"]}
    assert values["psnr"] == pytest.approx(metrics["restored"]["avg"]["psnr"], abs=1e-4)
    assert values["ssim"] == pytest.approx(metrics["restored"]["avg"]["ssim"], abs=1e-4)
    assert "lpips" not in values  # skipped on this machine: never invented


def test_card_lists_tasks_settings_per_task_scores_and_limits():
    metrics = _metrics()
    seeds = json.loads((REPO_ROOT / "reports" / "seeds.json").read_text())
    card = render_model_card(INDEX, metrics, seeds, FACTS)
    assert "| `derain` | remove rain |" in card
    assert "timestep 49" in card and "steps 20" in card and "allow_untrained_start" in card
    rain = metrics["restored"]["per_task"]["derain"]["psnr"]
    before = metrics["input"]["per_task"]["derain"]["psnr"]
    assert f"| derain | {before:.2f} → {rain:.2f}" in card
    spread = seeds["tables"]["psnr"]["restored"]["derain"]
    assert f"{spread['mean']:.2f} ± {spread['std']:.2f}" in card and "3 training seeds" in card
    assert "11 clean photos" in card and "40 128×128 crops" in card
    assert "from_pretrained" in card


def test_card_refuses_reports_without_the_restored_row():
    with pytest.raises(DataError, match="dvc repro evaluate"):
        render_model_card(INDEX, {"input": {}}, None, FACTS)


def test_a_seed_report_of_another_configuration_is_left_out():
    metrics = _metrics()
    seeds = json.loads((REPO_ROOT / "reports" / "seeds.json").read_text())
    metrics["restored"]["avg"]["psnr"] = 11.2  # the smoke run's model, not the seeds' configuration
    card = render_model_card(INDEX, metrics, seeds, FACTS)
    assert "training seeds" not in card and "±" not in card
