"""DVC stage ``bench``: time torch / ONNX Runtime (/ TensorRT), one process each → reports/bench.json.

Besides the ``bench`` sizes it times the photo row (``bench.photo_*``, 1 MP by default): one photo
restored with the ``sampling`` params as they are (automatic tiling included), in seconds per megapixel.
"""

from __future__ import annotations

from stages import run_stage
from unildiff import paths
from unildiff.bench.config import BenchConfig
from unildiff.bench.isolated import ModelDirs, run_bench_isolated
from unildiff.bench.run import PhotoBench, write_bench
from unildiff.params import load_section
from unildiff.pipeline import SamplingConfig


def main() -> None:
    config = load_section("bench", BenchConfig)
    sampling = load_section("sampling", SamplingConfig)
    model_dirs = ModelDirs(prior=paths.PRIOR, stage1=paths.STAGE1B, stage2=paths.STAGE2)
    photo = None
    if config.photo_width:
        photo = PhotoBench(config.photo_width, config.photo_height, config.photo_repeats)
    report = run_bench_isolated(
        model_dirs, config, sampling, onnx_dir=paths.ONNX, engine_dir=paths.ENGINES, photo=photo
    )
    write_bench(report, paths.BENCH_REPORT)


if __name__ == "__main__":
    run_stage(main)
