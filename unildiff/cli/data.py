"""CLI commands of the data area: ``unildiff prepare`` and ``unildiff validate``.

They call the same library functions as the DVC stages ``prepare`` and ``validate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unildiff import paths
from unildiff.cli._errors import reported_errors


def prepare(
    setting: Annotated[
        str, typer.Option(help="aio3 | aio5 | cdd11 | custom | single | autodir | udc")
    ] = "aio3",
    task: Annotated[str, typer.Option(help="the one task of --setting single (e.g. derain)")] = "",
    source: Annotated[str, typer.Option(help="builtin (photos in installed packages) | folder")] = "builtin",
    root: Annotated[Path, typer.Option(help="dataset root for --source folder")] = paths.RAW,
    output: Annotated[Path, typer.Option(help="prepared dir (replaced atomically)")] = paths.PREPARED,
    train_pairs_per_task: Annotated[int, typer.Option(help="built-in training pairs per task")] = 100,
    test_pairs_per_task: Annotated[int, typer.Option(help="built-in test pairs per task")] = 4,
    seed: Annotated[int, typer.Option(help="seed of the split, crops and degradations")] = 0,
) -> None:
    """Make lq/gt pairs and <output>/manifest.csv, and print a per-task count table."""
    from rich.console import Console

    from unildiff.data.config import DataConfig
    from unildiff.data.prepare import prepare_dataset, task_count_table

    with reported_errors():
        config = DataConfig(
            setting=setting,
            task=task,
            source=source,
            root=root,
            train_pairs_per_task=train_pairs_per_task,
            test_pairs_per_task=test_pairs_per_task,
            seed=seed,
        )
        console = Console()
        rows = prepare_dataset(config, output, console=console)
        console.print(task_count_table(rows, title=f"{output} ({setting}, source={source})"))


def validate(
    setting: Annotated[str, typer.Option(help="the setting the prepared dir was made for")] = "aio3",
    task: Annotated[str, typer.Option(help="its task, for --setting single")] = "",
    prepared: Annotated[Path, typer.Option(help="prepared dir to check")] = paths.PREPARED,
    min_pairs_per_task: Annotated[int, typer.Option(help="minimum pairs per task and split")] = 2,
    reports: Annotated[Path, typer.Option(help="folder for validation.json and .html")] = paths.REPORTS,
) -> None:
    """Check a prepared dir with the Great Expectations suite; exit 1 naming the failing expectation."""
    from unildiff.data.validate import validate_prepared, write_reports
    from unildiff.data.validate_config import ValidateConfig

    with reported_errors():
        report = validate_prepared(
            prepared, setting, ValidateConfig(min_pairs_per_task=min_pairs_per_task), task
        )
        write_reports(report, reports / "validation.json", reports / "validation.html")
        typer.echo(
            f"validation {'passed' if report.success else 'FAILED'}: {report.pairs} pairs -> {reports}"
        )
        report.raise_for_failure()


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.command()(prepare)
    app.command()(validate)
