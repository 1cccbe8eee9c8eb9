"""``unildiff restore`` and ``unildiff tasks``: restore image files and folders with the trained model.

The model is one folder (``models/unildiff``, :class:`~unildiff.pipeline_unildiff.UniLDiffPipeline`);
its recorded sampling settings apply unless a flag overrides one. A start the model was not trained at
is refused unless ``--allow-untrained-start``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unildiff import paths
from unildiff.cli._errors import reported_errors

RECORDED = "default: the model's recorded value"

ModelOption = Annotated[Path, typer.Option(help="The model folder (`dvc repro` writes models/unildiff).")]


def open_model(model: Path, device: str = "cpu"):
    """``UniLDiffPipeline.from_pretrained(model)`` on ``device``."""
    from unildiff.pipeline_unildiff import UniLDiffPipeline

    return UniLDiffPipeline.from_pretrained(model).to(device)


def build_sampler(
    pipeline,
    backend: str,
    onnx_dir: Path,
    engine_dir: Path,
    device: str,
    dtype: str = "fp32",
    allow_untrained_start: bool = False,
    **overrides,
):
    """The model's denoising loop on ``backend``: its torch modules (computing in ``dtype``), or the
    exported graphs with the model's torch text encoders; the recorded settings with ``overrides``."""
    from unildiff.backends import Backend, open_backend

    kind = Backend(backend)
    if kind is Backend.TORCH:
        graphs = open_backend(kind, model=pipeline.model, device=device)
        if dtype != "fp32":
            from unildiff.backends.torch import TORCH_DTYPES, CastGraphs

            graphs = CastGraphs(graphs, TORCH_DTYPES[dtype])
    else:
        graphs = open_backend(kind, onnx_dir=onnx_dir, engine_dir=engine_dir, device=device)
    return pipeline.sampler(graphs=graphs, allow_untrained_start=allow_untrained_start, **overrides)


def describe_sampling(sampler, overridden: list[str]) -> str:
    """One line with every setting the restoration uses; the ones a flag set are marked ``(flag)``."""
    import dataclasses

    values = {item.name: getattr(sampler.config, item.name) for item in dataclasses.fields(sampler.config)}
    values.update(
        start=sampler.start.mode, start_timestep=sampler.start.timestep, start_noise=sampler.start.noise
    )
    parts = [f"{name}={value}" + (" (flag)" if name in overridden else "") for name, value in values.items()]
    return "sampling: " + ", ".join(parts)


def register(app: typer.Typer) -> None:
    """Add ``restore`` and ``tasks`` to ``app``."""

    @app.command()
    def tasks(model: ModelOption = paths.MODEL) -> None:
        """List the tasks the model was trained on and the prompt of each (for --task)."""
        with reported_errors():
            pipeline = open_model(model)
            width = max(len(name) for name in pipeline.tasks)
            for name, prompt in pipeline.tasks.items():
                typer.echo(f"{name:<{width}}  {prompt}")

    @app.command()
    def restore(
        inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders to restore.")],
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Output folder (never an input folder).")
        ],
        model: ModelOption = paths.MODEL,
        task: Annotated[
            str,
            typer.Option(help='A task name or its prompt, e.g. derain or "remove rain" (`unildiff tasks`).'),
        ] = "",
        prompt: Annotated[str, typer.Option(help="Free-text prompt instead of a task.")] = "",
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
        start_timestep: Annotated[
            int | None, typer.Option(help=f"First denoising timestep of an LQ start ({RECORDED}).")
        ] = None,
        start_noise: Annotated[
            float | None,
            typer.Option(help=f"Noise scale at an LQ start: 1 = SDEdit, 0 = the LQ latent ({RECORDED})."),
        ] = None,
        allow_untrained_start: Annotated[
            bool,
            typer.Option(
                help="Run a start the model was not trained at (refused otherwise), with a warning."
            ),
        ] = False,
        color_fix: Annotated[
            str | None, typer.Option(help=f"none | wavelet | adain | adaptive ({RECORDED}).")
        ] = None,
        detail_fix_radius: Annotated[
            int | None,
            typer.Option(help=f"Guided refinement against the LQ, window radius; 0 = off ({RECORDED})."),
        ] = None,
        backend: Annotated[str, typer.Option(help="torch | onnxruntime | tensorrt.")] = "torch",
        device: Annotated[str, typer.Option(help="Torch device (cpu, cuda).")] = "cpu",
        dtype: Annotated[
            str, typer.Option(help="fp32 | bf16 | fp16: the torch backend's compute type (half types: cuda).")
        ] = "fp32",
        max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels than this.")] = 64
        * 1024
        * 1024,
        onnx_dir: Annotated[
            Path, typer.Option(help="ONNX graphs (onnxruntime/tensorrt backends).")
        ] = paths.ONNX,
        engine_dir: Annotated[Path, typer.Option(help="TensorRT engines.")] = paths.ENGINES,
    ) -> None:
        """Restore images; outputs keep each input's size and mode. Exit code 1 if any file failed.

        Without --task or --prompt the restoration is blind (the model is not told the degradation).
        """
        from unildiff.backends import Backend
        from unildiff.errors import ConfigError

        with reported_errors():
            if task and prompt:
                raise ConfigError("--task and --prompt exclude each other")
            valid = [kind.value for kind in Backend]
            if backend not in valid:
                raise ConfigError(f"unknown --backend {backend!r} (valid: {', '.join(valid)})")
            if dtype not in ("fp32", "bf16", "fp16"):
                raise ConfigError(f"unknown --dtype {dtype!r} (valid: fp32, bf16, fp16)")
            if dtype != "fp32" and (backend != "torch" or device != "cuda"):
                raise ConfigError(f"--dtype {dtype} needs --backend torch --device cuda")
            from unildiff.restore import plan_jobs, restore_files

            flags = {
                "scheduler": scheduler,
                "steps": steps,
                "cfg": cfg,
                "seed": seed,
                "tile": tile,
                "tile_overlap": tile_overlap,
                "auto_tile": auto_tile,
                "color_fix": color_fix,
                "detail_fix_radius": detail_fix_radius,
                "start": start,
                "start_timestep": start_timestep,
                "start_noise": start_noise,
            }
            plan_jobs(inputs, output)  # refuse bad outputs before loading any weights
            pipeline = open_model(model, device)
            text = pipeline.prompt_for(task) if task else prompt
            sampler = build_sampler(
                pipeline, backend, onnx_dir, engine_dir, device, dtype, allow_untrained_start, **flags
            )
            overridden = [name for name, value in flags.items() if value is not None]
            typer.echo(f"{describe_sampling(sampler, overridden)} (from {model})")
            if not text:
                typer.echo(f"prompt: none (blind restoration; tasks: {', '.join(pipeline.tasks)})")
            else:
                typer.echo(f"prompt: {text!r}")
            summary = restore_files(sampler, inputs, output, text, sampler.config.seed, max_pixels, device)
            typer.echo(f"restored {len(summary.written)} image(s) into {output}")
            if summary.failed:
                typer.echo(
                    f"error: {len(summary.failed)} file(s) failed: "
                    + ", ".join(str(path) for path, _ in summary.failed),
                    err=True,
                )
                raise typer.Exit(1)
