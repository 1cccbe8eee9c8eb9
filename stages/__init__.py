"""Thin DVC entry points: load params (:mod:`unildiff.params`) → call unildiff → write outs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from unildiff.errors import UniLDiffError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a UniLDiffError becomes one ``error:`` line and exit code 1."""
    try:
        main()
    except UniLDiffError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def write_untrained_outs(
    checkpoints: Path, live_dirs: tuple[Path, ...], record: Mapping[str, object]
) -> None:
    """A stage that trains nothing still owes DVC every declared out: write them saying so.

    ``checkpoints`` (persist) is created empty or kept; each ``live_dir`` gets ``metrics.json`` = ``record``
    and an empty ``plots/metrics`` folder.
    """
    from unildiff.utils.atomic import atomic_write_json

    checkpoints.mkdir(parents=True, exist_ok=True)
    for live_dir in live_dirs:
        (live_dir / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        atomic_write_json(live_dir / "metrics.json", dict(record))
