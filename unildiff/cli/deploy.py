"""``unildiff gpu-acceptance``: the deployment path's GPU checks in one run (one JSON report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unildiff.cli._errors import reported_errors


def gpu_acceptance(
    output: Annotated[Path, typer.Option(help="Report (JSON).")] = Path("reports/gpu_acceptance.json"),
    onnx_dir: Annotated[
        Path, typer.Option(help="SDXL-size graphs from `unildiff export onnx --sdxl-size` (TensorRT check).")
    ] = Path("export/onnx_sdxl"),
    engine_dir: Annotated[Path, typer.Option(help="Engine root for the TensorRT check.")] = Path(
        "export/engines_sdxl"
    ),
    sizes: Annotated[list[int], typer.Option("--size", help="Restoration sides (repeat).")] = [512, 1024],  # noqa: B006
) -> None:
    """Torch bf16 restoration at SDXL size, TensorRT engines, one training step per stage against the plan.

    Checks the host cannot run are skipped with the reason; exits 1 when a check finds a wrong result.
    """
    with reported_errors():
        from unildiff.export.gpu_acceptance import description, run_acceptance
        from unildiff.utils.atomic import atomic_write_json

        report = run_acceptance(onnx_dir, engine_dir, tuple(sizes))
        atomic_write_json(output, report)
        for line in description(report):
            typer.echo(line)
        typer.echo(f"wrote {output}")
        if not report["passed"]:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``gpu-acceptance`` to ``app``."""
    app.command("gpu-acceptance")(gpu_acceptance)
