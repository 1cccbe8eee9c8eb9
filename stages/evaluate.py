"""DVC stage ``evaluate``: trained weights + data/prepared (test split) -> reports/ metrics, tables, grids.

It also writes the sampling record ``models/sampling.json``: the ``sampling`` params these weights were
evaluated with, which ``unildiff restore`` uses unless a flag overrides a setting.
"""

from __future__ import annotations

from pathlib import Path

from stages import run_stage
from unildiff.evaluation.evaluate import EvaluateConfig, evaluate_model
from unildiff.evaluation.reports import write_reports
from unildiff.models.bundle import load_trained_model
from unildiff.params import load_section
from unildiff.pipeline import SamplingConfig
from unildiff.restore import write_sampling_record

PREPARED_DIR = Path("data/prepared")
PRIOR_DIR = Path("models/prior")
STAGE1_DIR = Path("models/stage1b")
STAGE2_DIR = Path("models/stage2")
REPORTS_DIR = Path("reports")
SAMPLING_RECORD = Path("models/sampling.json")


def main() -> None:
    sampling = load_section("sampling", SamplingConfig)
    config = load_section("evaluate", EvaluateConfig)
    model = load_trained_model(PRIOR_DIR, STAGE1_DIR, STAGE2_DIR)
    write_reports(evaluate_model(model, PREPARED_DIR, sampling, config), REPORTS_DIR)
    write_sampling_record(sampling, SAMPLING_RECORD)
    print((REPORTS_DIR / "metrics.md").read_text())


if __name__ == "__main__":
    run_stage(main)
