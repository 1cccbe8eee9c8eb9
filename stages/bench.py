"""DVC stage ``bench``: time torch / ONNX Runtime (/ TensorRT) → reports/bench.json."""

from __future__ import annotations

from pathlib import Path

from stages._params import load_section, run_stage
from unildiff.export.bench import run_bench, write_bench
from unildiff.export.config import BenchConfig
from unildiff.models.bundle import load_trained_model
from unildiff.pipeline import SamplingConfig

PRIOR_DIR = Path("models/prior")
STAGE1_DIR = Path("models/stage1b")
STAGE2_DIR = Path("models/stage2")
ONNX_DIR = Path("export/onnx")
ENGINE_DIR = Path("export/engines")
REPORT_PATH = Path("reports/bench.json")


def main() -> None:
    config = load_section("bench", BenchConfig)
    sampling = load_section("sampling", SamplingConfig)
    model = load_trained_model(PRIOR_DIR, STAGE1_DIR, STAGE2_DIR)
    report = run_bench(model, config, sampling, onnx_dir=ONNX_DIR, engine_dir=ENGINE_DIR)
    write_bench(report, REPORT_PATH)


if __name__ == "__main__":
    run_stage(main)
