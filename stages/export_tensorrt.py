"""DVC stage ``export_tensorrt`` (deploy/dvc.yaml, CUDA hosts only): ONNX graphs → TensorRT engines."""

from __future__ import annotations

from stages import run_stage
from unildiff import paths
from unildiff.export.config import TensorRTConfig
from unildiff.export.tensorrt_build import build_engines
from unildiff.params import load_section


def main() -> None:
    folder = build_engines(paths.ONNX, paths.ENGINES, load_section("tensorrt", TensorRTConfig))
    print(f"TensorRT engines written to {folder}")


if __name__ == "__main__":
    run_stage(main)
