"""DVC stage ``evaluate``: trained weights + data/prepared (test split) -> reports/ metrics, tables, grids."""

from __future__ import annotations

from pathlib import Path

from stages._params import load_section, run_stage
from unildiff.evaluation.evaluate import EvaluateConfig, evaluate_model
from unildiff.evaluation.reports import write_reports
from unildiff.models.bundle import load_trained_model
from unildiff.pipeline import SamplingConfig

PREPARED_DIR = Path("data/prepared")
PRIOR_DIR = Path("models/prior")
STAGE1_DIR = Path("models/stage1b")
STAGE2_DIR = Path("models/stage2")
REPORTS_DIR = Path("reports")


def main() -> None:
    sampling = load_section("sampling", SamplingConfig)
    config = load_section("evaluate", EvaluateConfig)
    model = load_trained_model(PRIOR_DIR, STAGE1_DIR, STAGE2_DIR)
    write_reports(evaluate_model(model, PREPARED_DIR, sampling, config), REPORTS_DIR)
    print((REPORTS_DIR / "metrics.md").read_text())


if __name__ == "__main__":
    run_stage(main)
