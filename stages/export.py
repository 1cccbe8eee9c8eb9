"""DVC stage ``export``: the model folder → export/onnx/*.onnx (+ graphs.json) and export/parity.json."""

from __future__ import annotations

from stages import run_stage
from unildiff import paths
from unildiff.export.config import ExportConfig
from unildiff.export.parity import export_and_check
from unildiff.params import load_section
from unildiff.pipeline_unildiff import UniLDiffPipeline


def main() -> None:
    config = load_section("export", ExportConfig)
    pipeline = UniLDiffPipeline.from_pretrained(paths.MODEL)
    report = export_and_check(pipeline, paths.PREPARED, paths.ONNX, paths.PARITY, config)
    for name, graph in report["graphs"].items():
        print(f"{name:>15}: max |onnx - torch| = {graph['max_abs_diff']:.2e}")
    print(f"end-to-end PSNR(ORT, torch) >= {report['end_to_end']['min_psnr_db']} dB")


if __name__ == "__main__":
    run_stage(main)
