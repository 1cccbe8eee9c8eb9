"""CLI commands of the evaluate area (placeholder until that area lands)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
