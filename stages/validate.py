"""DVC stage ``validate``: data/prepared -> reports/validation.{json,html}; exits 1 when the suite fails."""

from __future__ import annotations

import time

from stages import run_stage
from unildiff import paths
from unildiff.data.config import DataConfig
from unildiff.data.validate import validate_prepared, write_reports
from unildiff.data.validate_config import ValidateConfig
from unildiff.params import load_section, read_params


def main() -> None:
    started = time.perf_counter()
    params = read_params()
    data = load_section("data", DataConfig, params)
    validate = load_section("validate", ValidateConfig, params)
    report = validate_prepared(paths.PREPARED, data.setting, validate, data.task)
    write_reports(report, paths.VALIDATION_JSON, paths.VALIDATION_HTML)
    verdict = "passed" if report.success else "FAILED"
    seconds = time.perf_counter() - started
    print(
        f"validation {verdict}: {report.pairs} pairs, {len(report.failures)}/{len(report.outcomes)} checks "
        f"failed, {len(report.failed_pairs)} pair(s) named, {seconds:.1f} s -> {paths.VALIDATION_HTML}"
    )
    report.raise_for_failure(str(paths.VALIDATION_HTML))


if __name__ == "__main__":
    run_stage(main)
