"""DVC stage ``export``: trained weights → export/onnx/*.onnx (+ graphs.json) and export/parity.json."""

from __future__ import annotations

from stages import run_stage
from unildiff import paths
from unildiff.export.config import ExportConfig
from unildiff.export.parity import export_and_check
from unildiff.models.bundle import load_trained_model
from unildiff.params import load_section
from unildiff.pipeline import SamplingConfig


def main() -> None:
    config = load_section("export", ExportConfig)
    sampling = load_section("sampling", SamplingConfig)
    model = load_trained_model(paths.PRIOR, paths.STAGE1B, paths.STAGE2)
    report = export_and_check(model, paths.PREPARED, paths.ONNX, paths.PARITY, sampling, config)
    for name, graph in report["graphs"].items():
        print(f"{name:>15}: max |onnx - torch| = {graph['max_abs_diff']:.2e}")
    print(f"end-to-end PSNR(ORT, torch) >= {report['end_to_end']['min_psnr_db']} dB")


if __name__ == "__main__":
    run_stage(main)
