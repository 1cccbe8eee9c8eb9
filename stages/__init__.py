"""Thin DVC entry points: load params (:mod:`unildiff.params`) → call unildiff → write outs."""

from __future__ import annotations

import sys
from collections.abc import Callable

from unildiff.errors import UniLDiffError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a UniLDiffError becomes one ``error:`` line and exit code 1."""
    try:
        main()
    except UniLDiffError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
