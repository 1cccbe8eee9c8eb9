"""DVC stage ``evaluate``: trained weights + data/prepared (test split) -> reports/ metrics, tables, grids.

It also writes the sampling record ``models/sampling.json``: the ``sampling`` params these weights were
evaluated with, which ``unildiff restore`` uses unless a flag overrides a setting.
"""

from __future__ import annotations

from stages import run_stage
from unildiff import paths
from unildiff.evaluation.evaluate import EvaluateConfig, evaluate_model
from unildiff.evaluation.reports import write_reports
from unildiff.models.bundle import load_trained_model
from unildiff.params import load_section
from unildiff.pipeline import SamplingConfig
from unildiff.restore import write_sampling_record


def main() -> None:
    sampling = load_section("sampling", SamplingConfig)
    config = load_section("evaluate", EvaluateConfig)
    model = load_trained_model(paths.PRIOR, paths.STAGE1B, paths.STAGE2)
    write_reports(evaluate_model(model, paths.PREPARED, sampling, config), paths.REPORTS)
    write_sampling_record(sampling, paths.SAMPLING_RECORD)
    print((paths.REPORTS / "metrics.md").read_text())


if __name__ == "__main__":
    run_stage(main)
