"""CLI commands of the restore area (placeholder until that area lands)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
