"""DVC stage ``validate``: data/prepared -> reports/validation.{json,html}; exits 1 when the suite fails."""

from __future__ import annotations

from pathlib import Path

from stages._params import load_section, run_stage
from unildiff.data.config import DataConfig, ValidateConfig
from unildiff.data.validate import validate_prepared, write_reports

PREPARED_DIR = Path("data/prepared")
JSON_REPORT = Path("reports/validation.json")
HTML_REPORT = Path("reports/validation.html")


def main() -> None:
    setting = load_section("data", DataConfig).setting
    report = validate_prepared(PREPARED_DIR, setting, load_section("validate", ValidateConfig))
    write_reports(report, JSON_REPORT, HTML_REPORT)
    verdict = "passed" if report.success else "FAILED"
    print(
        f"validation {verdict}: {report.pairs} pairs, {len(report.failures)}/{len(report.outcomes)} "
        f"expectations failed -> {HTML_REPORT}"
    )
    report.raise_for_failure()


if __name__ == "__main__":
    run_stage(main)
