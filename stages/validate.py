"""DVC stage ``validate``: data/prepared -> reports/validation.{json,html}; exits 1 when the suite fails."""

from __future__ import annotations

import time
from pathlib import Path

from stages import run_stage
from unildiff.data.config import DataConfig
from unildiff.data.validate import validate_prepared, write_reports
from unildiff.data.validate_config import ValidateConfig
from unildiff.params import load_section, read_params

PREPARED_DIR = Path("data/prepared")
JSON_REPORT = Path("reports/validation.json")
HTML_REPORT = Path("reports/validation.html")


def main() -> None:
    started = time.perf_counter()
    params = read_params()
    setting = load_section("data", DataConfig, params).setting
    report = validate_prepared(PREPARED_DIR, setting, load_section("validate", ValidateConfig, params))
    write_reports(report, JSON_REPORT, HTML_REPORT)
    verdict = "passed" if report.success else "FAILED"
    seconds = time.perf_counter() - started
    print(
        f"validation {verdict}: {report.pairs} pairs, {len(report.failures)}/{len(report.outcomes)} checks "
        f"failed, {len(report.failed_pairs)} pair(s) named, {seconds:.1f} s -> {HTML_REPORT}"
    )
    report.raise_for_failure(str(HTML_REPORT))


if __name__ == "__main__":
    run_stage(main)
