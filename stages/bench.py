"""DVC stage ``bench``: time torch / ONNX Runtime (/ TensorRT), one process each → reports/bench.json.

Besides the ``bench`` sizes it times the photo row (``bench.photo_*``, 1 MP by default): one photo
restored with the ``sampling`` params as they are (automatic tiling included), in seconds per megapixel.
"""

from __future__ import annotations

from pathlib import Path

from stages import run_stage
from unildiff.bench.config import BenchConfig
from unildiff.bench.isolated import ModelDirs, run_bench_isolated
from unildiff.bench.run import PhotoBench, write_bench
from unildiff.params import load_section
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
    model_dirs = ModelDirs(prior=PRIOR_DIR, stage1=STAGE1_DIR, stage2=STAGE2_DIR)
    photo = None
    if config.photo_width:
        photo = PhotoBench(config.photo_width, config.photo_height, config.photo_repeats)
    report = run_bench_isolated(
        model_dirs, config, sampling, onnx_dir=ONNX_DIR, engine_dir=ENGINE_DIR, photo=photo
    )
    write_bench(report, REPORT_PATH)


if __name__ == "__main__":
    run_stage(main)
