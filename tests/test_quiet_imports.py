"""Importing unildiff prints nothing: the bitsandbytes missing-kernel notice is dropped, others pass."""

from __future__ import annotations

import logging
import subprocess
import sys

from tests.smoke_repo import REPO_ROOT
from unildiff import BITSANDBYTES_KERNEL_NOTICE

LOGGER = "bitsandbytes.backends.cpu.ops"


def test_the_kernel_notice_is_filtered_and_other_records_pass() -> None:
    logger = logging.getLogger(LOGGER)
    notice = logger.makeRecord(
        LOGGER, logging.WARNING, __file__, 1, BITSANDBYTES_KERNEL_NOTICE + ": %s", ("x",), None
    )
    other = logger.makeRecord(LOGGER, logging.WARNING, __file__, 1, "CUDA setup failed", (), None)
    assert logger.filter(notice) is False
    assert logger.filter(other) is True


def test_importing_the_model_code_prints_only_real_warnings() -> None:
    # diffusers imports bitsandbytes (a pyiqa dependency) while unildiff.models.prior imports diffusers.
    script = (
        "import unildiff.models.prior, logging; "
        f"logging.getLogger({LOGGER!r}).warning('a real bitsandbytes warning')"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout == ""
    assert completed.stderr.strip() == "a real bitsandbytes warning"
