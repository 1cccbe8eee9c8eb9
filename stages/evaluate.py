"""DVC stage ``evaluate``: the model folder + data/prepared (test split) -> reports/ metrics, tables, grids.

The model restores with the settings recorded in its folder (``models/unildiff``), as ``unildiff restore``
does.
"""

from __future__ import annotations

from stages import run_stage
from unildiff import paths
from unildiff.evaluation.evaluate import EvaluateConfig, evaluate_model
from unildiff.evaluation.reports import write_reports
from unildiff.params import load_section
from unildiff.pipeline_unildiff import UniLDiffPipeline


def main() -> None:
    config = load_section("evaluate", EvaluateConfig)
    pipeline = UniLDiffPipeline.from_pretrained(paths.MODEL)
    write_reports(evaluate_model(pipeline, paths.PREPARED, config), paths.REPORTS)
    print((paths.REPORTS / "metrics.md").read_text())


if __name__ == "__main__":
    run_stage(main)
