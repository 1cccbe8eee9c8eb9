"""DVC stage ``prepare``: params ``data`` (and the dataset at ``data.root``) -> data/prepared/."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from stages import run_stage
from unildiff import paths
from unildiff.data.config import DataConfig
from unildiff.data.prepare import prepare_dataset, task_count_table
from unildiff.data.readers import check_dataset_root
from unildiff.params import load_section


def main() -> None:
    config = load_section("data", DataConfig)
    if config.source == "folder":
        check_dataset_root(config.root, Path.cwd())  # DVC runs the stage at the repository root
    console = Console()
    rows = prepare_dataset(config, paths.PREPARED, console=console)
    console.print(
        task_count_table(rows, title=f"{paths.PREPARED} ({config.setting}, source={config.source})")
    )


if __name__ == "__main__":
    run_stage(main)
