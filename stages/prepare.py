"""DVC stage ``prepare``: params ``data`` -> data/prepared/ (lq/gt PNGs + manifest.csv)."""

from __future__ import annotations

from rich.console import Console

from stages import run_stage
from unildiff import paths
from unildiff.data.config import DataConfig
from unildiff.data.prepare import prepare_dataset, task_count_table
from unildiff.params import load_section


def main() -> None:
    config = load_section("data", DataConfig)
    console = Console()
    rows = prepare_dataset(config, paths.PREPARED, console=console)
    console.print(
        task_count_table(rows, title=f"{paths.PREPARED} ({config.setting}, source={config.source})")
    )


if __name__ == "__main__":
    run_stage(main)
