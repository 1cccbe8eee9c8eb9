"""``unildiff restore``: restore image files and folders with trained weights.

The sampling settings are the ones recorded with the weights (``models/sampling.json``, written by the
``evaluate`` stage); each sampling flag defaults to "the recorded value" and overrides it when given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unildiff import paths
from unildiff.cli._errors import reported_errors

RECORDED = "default: the recorded value"


def build_pipeline(
    backend: str,
    sampling,
    prior_dir: Path,
    stage1_dir: Path,
    stage2_dir: Path,
    onnx_dir: Path,
    engine_dir: Path,
    device: str,
    dtype: str = "fp32",
):
    """A RestorationPipeline for ``backend`` (torch modules, or exported graphs + torch text encoders);
    the torch modules compute in ``dtype`` (``fp32``, or ``bf16``/``fp16`` on CUDA)."""
    from unildiff.backends import Backend, open_backend
    from unildiff.pipeline import RestorationPipeline

    kind = Backend(backend)
    if kind is Backend.TORCH:
        from unildiff.backends.torch import TORCH_DTYPES, CastGraphs
        from unildiff.models.bundle import load_trained_model

        model = load_trained_model(prior_dir, stage1_dir, stage2_dir)
        graphs = open_backend(kind, model=model, device=device)
        if dtype != "fp32":
            graphs = CastGraphs(graphs, TORCH_DTYPES[dtype])
        return RestorationPipeline.with_prior(graphs, model.prior, sampling)
    from unildiff.models.prior import load_prior

    graphs = open_backend(kind, onnx_dir=onnx_dir, engine_dir=engine_dir, device=device)
    return RestorationPipeline.with_prior(graphs, load_prior(prior_dir), sampling)


def register(app: typer.Typer) -> None:
    """Add ``restore`` to ``app``."""

    @app.command()
    def restore(
        inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders to restore.")],
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Output folder (never an input folder).")
        ],
        task: Annotated[str, typer.Option(help='Task prompt, e.g. "remove rain".')] = "",
        no_prompt: Annotated[bool, typer.Option("--no-prompt", help="Prompt-free restoration.")] = False,
        steps: Annotated[int | None, typer.Option(help=f"Denoising steps ({RECORDED}).")] = None,
        cfg: Annotated[
            float | None, typer.Option(help=f"Classifier-free guidance scale ({RECORDED}).")
        ] = None,
        seed: Annotated[int | None, typer.Option(help=f"Seed of the initial noise ({RECORDED}).")] = None,
        tile: Annotated[
            int | None,
            typer.Option(help=f"Tile side in pixels; 0 = automatic, see --auto-tile ({RECORDED})."),
        ] = None,
        tile_overlap: Annotated[
            int | None, typer.Option(help=f"Tile overlap in pixels ({RECORDED}).")
        ] = None,
        auto_tile: Annotated[
            int | None,
            typer.Option(help=f"With --tile 0, tile images with a side above this; 0 = never ({RECORDED})."),
        ] = None,
        scheduler: Annotated[
            str | None, typer.Option(help=f"euler | euler_ancestral | ddim | dpmsolver ({RECORDED}).")
        ] = None,
        start: Annotated[str | None, typer.Option(help=f"lq (LQ latent) | noise ({RECORDED}).")] = None,
        strength: Annotated[
            float | None, typer.Option(help=f"Fraction of the schedule run from the LQ latent ({RECORDED}).")
        ] = None,
        start_noise: Annotated[
            float | None,
            typer.Option(help=f"Noise scale at an LQ start: 1 = SDEdit, 0 = the LQ latent ({RECORDED})."),
        ] = None,
        color_fix: Annotated[
            str | None, typer.Option(help=f"none | wavelet | adain | adaptive ({RECORDED}).")
        ] = None,
        detail_fix_radius: Annotated[
            int | None,
            typer.Option(help=f"Guided refinement against the LQ, window radius; 0 = off ({RECORDED})."),
        ] = None,
        sampling_record: Annotated[
            Path, typer.Option(help="Sampling settings recorded with the weights (evaluate stage).")
        ] = paths.SAMPLING_RECORD,
        backend: Annotated[str, typer.Option(help="torch | onnxruntime | tensorrt.")] = "torch",
        device: Annotated[str, typer.Option(help="Torch device (cpu, cuda).")] = "cpu",
        dtype: Annotated[
            str, typer.Option(help="fp32 | bf16 | fp16: the torch backend's compute type (half types: cuda).")
        ] = "fp32",
        max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels than this.")] = 64
        * 1024
        * 1024,
        prior: Annotated[Path, typer.Option(help="Prior folder (diffusers layout).")] = paths.PRIOR,
        stage1: Annotated[
            Path, typer.Option(help="Stage-1 weights (lq_encoder, daff, unet).")
        ] = paths.STAGE1B,
        stage2: Annotated[Path, typer.Option(help="Stage-2 weights (DAEM decoder).")] = paths.STAGE2,
        onnx_dir: Annotated[
            Path, typer.Option(help="ONNX graphs (onnxruntime/tensorrt backends).")
        ] = paths.ONNX,
        engine_dir: Annotated[Path, typer.Option(help="TensorRT engines.")] = paths.ENGINES,
    ) -> None:
        """Restore images; outputs keep each input's size and mode. Exit code 1 if any file failed."""
        from unildiff.backends import Backend
        from unildiff.errors import ConfigError

        with reported_errors():
            if no_prompt and task:
                raise ConfigError("--task and --no-prompt exclude each other")
            valid = [kind.value for kind in Backend]
            if backend not in valid:
                raise ConfigError(f"unknown --backend {backend!r} (valid: {', '.join(valid)})")
            if dtype not in ("fp32", "bf16", "fp16"):
                raise ConfigError(f"unknown --dtype {dtype!r} (valid: fp32, bf16, fp16)")
            if dtype != "fp32" and (backend != "torch" or device != "cuda"):
                raise ConfigError(f"--dtype {dtype} needs --backend torch --device cuda")
            from unildiff.restore import (
                describe_sampling,
                effective_sampling,
                plan_jobs,
                read_sampling_record,
                restore_files,
            )

            flags = {
                "scheduler": scheduler,
                "steps": steps,
                "cfg": cfg,
                "start": start,
                "strength": strength,
                "start_noise": start_noise,
                "seed": seed,
                "tile": tile,
                "tile_overlap": tile_overlap,
                "auto_tile": auto_tile,
                "color_fix": color_fix,
                "detail_fix_radius": detail_fix_radius,
            }
            plan_jobs(inputs, output)  # refuse bad outputs before loading any weights
            if backend == "torch":  # name the most upstream missing artifact first: weights, then the record
                from unildiff.models.bundle import require_trained_model

                require_trained_model(prior, stage1, stage2)
            sampling = effective_sampling(read_sampling_record(sampling_record), flags)
            overridden = [name for name, value in flags.items() if value is not None]
            typer.echo(f"{describe_sampling(sampling, overridden)} (from {sampling_record})")
            pipeline = build_pipeline(
                backend, sampling, prior, stage1, stage2, onnx_dir, engine_dir, device, dtype
            )
            summary = restore_files(
                pipeline, inputs, output, "" if no_prompt else task, sampling.seed, max_pixels, device
            )
            typer.echo(f"restored {len(summary.written)} image(s) into {output}")
            if summary.failed:
                typer.echo(
                    f"error: {len(summary.failed)} file(s) failed: "
                    + ", ".join(str(path) for path, _ in summary.failed),
                    err=True,
                )
                raise typer.Exit(1)
