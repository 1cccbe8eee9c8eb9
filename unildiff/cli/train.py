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
    stage1a = "stage1a"
    stage1b = "stage1b"
    stage2 = "stage2"


def register(app: typer.Typer) -> None:
    """Add ``unildiff train`` to ``app``."""

    @app.command("train")
    def train(
        stage: Annotated[TrainingStage, typer.Argument(help="Training stage to run (reads ./params.yaml).")],
    ) -> None:
        """Run one training stage in the repository root (prefer `dvc repro <stage>`, which tracks it)."""
        completed = subprocess.run([sys.executable, "-m", f"stages.{stage.value}"], check=False)
        raise typer.Exit(completed.returncode)

    @app.command("plan")
    def plan(
        gpus: Annotated[int, typer.Option(help="Data-parallel GPUs.")] = 2,
        gpu_memory_gib: Annotated[float, typer.Option(help="Memory of one GPU, GiB.")] = 80.0,
        optimizer: Annotated[str, typer.Option(help="adamw | adamw_8bit.")] = "adamw",
        image_size: Annotated[int, typer.Option(help="Training crop side, pixels (paper: 512).")] = 512,
        global_batch: Annotated[int, typer.Option(help="Global batch (paper: 64).")] = 64,
        dtype: Annotated[
            str, typer.Option(help="bf16 | fp16 | fp32: frozen weights and activations.")
        ] = "bf16",
        output: Annotated[
            str, typer.Option("--output", "-o", help="Also write the Markdown report here.")
        ] = "",
    ) -> None:
        """Memory plan of the SDXL-size training stages, computed on the meta device (docs/scaling.md)."""
        from unildiff.cli._errors import reported_errors

        with reported_errors():
            from unildiff.errors import ConfigError

            dtypes = {"bf16": 2, "fp16": 2, "fp32": 4}
            if dtype not in dtypes:
                raise ConfigError(f"--dtype must be one of {tuple(dtypes)}, got {dtype!r}")
            if optimizer not in ("adamw", "adamw_8bit"):
                raise ConfigError(f"--optimizer must be adamw or adamw_8bit, got {optimizer!r}")
            for name, value in (("--gpus", gpus), ("--global-batch", global_batch)):
                if value < 1:
                    raise ConfigError(f"{name} must be >= 1, got {value}")
            if image_size < 64 or image_size % 64:
                raise ConfigError(f"--image-size must be a positive multiple of 64, got {image_size}")
            if gpu_memory_gib <= 0:
                raise ConfigError(f"--gpu-memory-gib must be > 0, got {gpu_memory_gib}")
            import torch

            from unildiff.bench.sdxl_size import SDXL_DAFF, SDXL_UNET, SDXL_VAE
            from unildiff.models.config import DAEMConfig
            from unildiff.training.plan import format_plan, plan_stage, stage_modules
            from unildiff.utils.atomic import atomic_write_text

            torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
            stages, checkpointing = stage_modules(  # DAFF as the sdxl preset sets it (three f^LQ scales)
                SDXL_UNET, SDXL_VAE, SDXL_DAFF, DAEMConfig(), torch_dtype
            )
            plans = [
                plan_stage(stage, image_size, gpus, optimizer, checkpointing, dtypes[dtype])
                for stage in stages
            ]
            report = format_plan(plans, gpus, optimizer, image_size, global_batch, gpu_memory_gib, dtype)
            typer.echo(report)
            if output:
                atomic_write_text(output, report)
