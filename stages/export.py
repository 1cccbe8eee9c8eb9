"""DVC stage ``export``: trained weights → export/onnx/*.onnx (+ graphs.json) and export/parity.json."""

from __future__ import annotations

from pathlib import Path

from stages import run_stage
from unildiff.export.config import ExportConfig
from unildiff.export.parity import export_and_check
from unildiff.models.bundle import load_trained_model
from unildiff.params import load_section
from unildiff.pipeline import SamplingConfig

PREPARED_DIR = Path("data/prepared")
PRIOR_DIR = Path("models/prior")
STAGE1_DIR = Path("models/stage1b")
STAGE2_DIR = Path("models/stage2")
ONNX_DIR = Path("export/onnx")
PARITY_PATH = Path("export/parity.json")


def main() -> None:
    config = load_section("export", ExportConfig)
    sampling = load_section("sampling", SamplingConfig)
    model = load_trained_model(PRIOR_DIR, STAGE1_DIR, STAGE2_DIR)
    report = export_and_check(model, PREPARED_DIR, ONNX_DIR, PARITY_PATH, sampling, config)
    for name, graph in report["graphs"].items():
        print(f"{name:>15}: max |onnx - torch| = {graph['max_abs_diff']:.2e}")
    print(f"end-to-end PSNR(ORT, torch) >= {report['end_to_end']['min_psnr_db']} dB")


if __name__ == "__main__":
    run_stage(main)
