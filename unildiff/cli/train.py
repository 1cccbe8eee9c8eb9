"""CLI commands of the training area: ``unildiff train <stage>`` runs the same code as the DVC stage."""

from __future__ import annotations

import enum
import subprocess
import sys
from typing import Annotated

import typer


class TrainingStage(str, enum.Enum):
    """The training stages of dvc.yaml."""

    prior = "prior"
    encode_latents = "encode_latents"
    train_daff = "train_daff"
    train_joint = "train_joint"
    train_daem = "train_daem"


def register(app: typer.Typer) -> None:
    """Add ``unildiff train`` to ``app``."""

    @app.command("train")
    def train(
        stage: Annotated[TrainingStage, typer.Argument(help="Training stage to run (reads ./params.yaml).")],
    ) -> None:
        """Run one training stage in the repository root (prefer `dvc repro <stage>`, which tracks it)."""
        completed = subprocess.run([sys.executable, "-m", f"stages.{stage.value}"], check=False)
        raise typer.Exit(completed.returncode)
