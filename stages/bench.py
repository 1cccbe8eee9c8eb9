"""DVC stage ``bench``: time torch / ONNX Runtime (/ TensorRT), one process each → reports/bench.json.

Besides the ``bench`` sizes it times the photo row (``bench.photo_*``, 1 MP by default): one photo
restored with the model's recorded settings (automatic tiling included), in seconds per megapixel.
"""

from __future__ import annotations

from stages import run_stage
from unildiff import paths
from unildiff.bench.config import BenchConfig
from unildiff.bench.isolated import run_bench_isolated
from unildiff.bench.run import photo_bench, write_bench
from unildiff.params import load_section


def main() -> None:
    config = load_section("bench", BenchConfig)
    report = run_bench_isolated(
        paths.MODEL, config, onnx_dir=paths.ONNX, engine_dir=paths.ENGINES, photo=photo_bench(config)
    )
    write_bench(report, paths.BENCH_REPORT)


if __name__ == "__main__":
    run_stage(main)
