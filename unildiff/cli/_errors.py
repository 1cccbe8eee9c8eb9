"""Turn library errors into one ``error:`` line and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from unildiff.errors import UniLDiffError


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Context manager for command bodies: a UniLDiffError prints ``error: …`` and exits 1."""
    try:
        yield
    except UniLDiffError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
