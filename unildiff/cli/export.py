"""``unildiff export onnx|tensorrt`` and ``unildiff bench`` (deployment area)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unildiff import paths
from unildiff.cli._errors import reported_errors
from unildiff.cli.restore import ModelOption

export_app = typer.Typer(
    help="Export the restoration graphs (ONNX; TensorRT engines on CUDA hosts).", no_args_is_help=True
)


@export_app.command("onnx")
def export_onnx(
    output: Annotated[
        Path | None, typer.Option(help="ONNX folder [export/onnx; --sdxl-size: export/onnx_sdxl].")
    ] = None,
    parity: Annotated[
        Path | None,
        typer.Option(help="Parity report [export/parity.json; --sdxl-size: export/parity_sdxl.json]."),
    ] = None,
    prepared: Annotated[Path, typer.Option(help="Prepared data (test split images).")] = paths.PREPARED,
    model: ModelOption = paths.MODEL,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17).")] = 18,
    dynamo: Annotated[bool, typer.Option(help="Try torch.onnx.export(dynamo=True) first.")] = True,
    parity_images: Annotated[int, typer.Option(help="Test images in the parity report.")] = 2,
    parity_steps: Annotated[
        int, typer.Option(help="Steps of the end-to-end parity of a model that starts from noise.")
    ] = 4,
    sdxl_size: Annotated[
        bool,
        typer.Option(
            "--sdxl-size",
            help="Random-weight SDXL-size graphs (no trained model needed): lq_encoder, denoiser, decoder.",
        ),
    ] = False,
    dtype: Annotated[str, typer.Option(help="--sdxl-size: denoiser dtype, fp16 | bf16 | fp32.")] = "fp16",
    vae_dtype: Annotated[str, typer.Option(help="--sdxl-size: LQ encoder and decoder dtype.")] = "fp32",
    width_divisor: Annotated[
        int, typer.Option(help="--sdxl-size: divide every channel count (1 = SDXL; 2-16 for quick checks).")
    ] = 1,
) -> None:
    """Export lq_encoder, denoiser, decoder and the text encoders to ONNX and write the parity report
    (the end-to-end parity restores with the model's recorded settings); --sdxl-size exports the three
    restoration graphs at SDXL size with random weights instead."""
    if sdxl_size:
        _export_onnx_sdxl_size(output, parity, opset, dtype, vae_dtype, width_divisor)
        return
    output = output or paths.ONNX
    parity = parity or paths.PARITY
    with reported_errors():
        from unildiff.export.config import ExportConfig
        from unildiff.export.parity import export_and_check
        from unildiff.pipeline_unildiff import UniLDiffPipeline

        config = ExportConfig(
            opset=opset, prefer_dynamo=dynamo, parity_images=parity_images, parity_steps=parity_steps
        )
        pipeline = UniLDiffPipeline.from_pretrained(model)
        report = export_and_check(pipeline, prepared, output, parity, config)
        typer.echo(f"wrote {output}; end-to-end PSNR(ORT, torch) >= {report['end_to_end']['min_psnr_db']} dB")


def _export_onnx_sdxl_size(
    output: Path | None, parity: Path | None, opset: int, dtype: str, vae_dtype: str, width_divisor: int
) -> None:
    """``export onnx --sdxl-size``: the three restoration graphs at SDXL's size, random weights, checked
    against torch by ONNX Runtime (CPU); each graph in its own process (its time and peak memory reported)."""
    output = output or Path("export/onnx_sdxl")
    parity = parity or Path("export/parity_sdxl.json")
    with reported_errors():
        from unildiff.export.config import TensorRTProfileConfig
        from unildiff.export.sdxl_export import export_sdxl_size
        from unildiff.export.sdxl_graphs import SdxlGraphsConfig

        config = SdxlGraphsConfig(
            denoiser_dtype=dtype, vae_dtype=vae_dtype, width_divisor=width_divisor, opset=opset
        )
        report = export_sdxl_size(
            output, parity, config, TensorRTProfileConfig(), lambda name: typer.echo(f"exporting {name} ...")
        )
        for name, graph in report["graphs"].items():
            rss = graph["peak_rss_gib"]
            worst = max(item["max_abs_diff"] for item in graph["input_sets"])
            typer.echo(
                f"{name:>10} ({graph['dtype']}, {graph['parameters'] / 1e6:.1f} M parameters): "
                f"max |ORT - torch| {worst:.3g}, "
                f"{'ok' if graph['within_tolerance'] else 'OUTSIDE TOLERANCE'}; "
                f"{sum(graph['seconds'].values()):.0f} s, peak RSS "
                f"{rss['export']:.2f} GiB (export) / {rss['check']:.2f} GiB (check)"
            )
        typer.echo(f"wrote {output} and {parity}")
        if not report["all_within_tolerance"]:
            raise typer.Exit(1)


@export_app.command("tensorrt")
def export_tensorrt(
    onnx_dir: Annotated[Path, typer.Option(help="ONNX graphs from `unildiff export onnx`.")] = paths.ONNX,
    engine_dir: Annotated[
        Path, typer.Option(help="Engine root (a <gpu>_trt<version> folder is made).")
    ] = paths.ENGINES,
    min_size: Annotated[int, typer.Option(help="Smallest image side of the profile.")] = 256,
    opt_size: Annotated[int, typer.Option(help="Image side TensorRT optimises for.")] = 512,
    max_size: Annotated[int, typer.Option(help="Largest image side of the profile.")] = 1024,
    max_images: Annotated[int, typer.Option(help="Images per call (denoiser batch = 2x for CFG).")] = 1,
    denoiser_precision: Annotated[str, typer.Option(help="fp16 | tf32 | fp32.")] = "fp16",
    decoder_precision: Annotated[
        str, typer.Option(help="tf32 | fp32 | fp16 (SDXL overflows in fp16).")
    ] = "tf32",
    workspace_gib: Annotated[float, typer.Option(help="Builder workspace (GiB).")] = 8.0,
) -> None:
    """Build TensorRT engines (CUDA + TensorRT 10 only; elsewhere one line and exit 1)."""
    with reported_errors():
        from unildiff.export.config import TensorRTConfig, TensorRTProfileConfig
        from unildiff.export.tensorrt_build import build_engines

        profile = TensorRTProfileConfig(
            min_image_size=min_size, opt_image_size=opt_size, max_image_size=max_size, max_images=max_images
        )
        config = TensorRTConfig(
            profile=profile,
            denoiser_precision=denoiser_precision,
            decoder_precision=decoder_precision,
            workspace_gib=workspace_gib,
        )
        typer.echo(f"wrote {build_engines(onnx_dir, engine_dir, config)}")


def bench(
    output: Annotated[Path, typer.Option(help="Report (JSON).")] = paths.BENCH_REPORT,
    sizes: Annotated[list[int], typer.Option("--size", help="Square image side; repeat for several.")] = [64],  # noqa: B006
    steps: Annotated[list[int], typer.Option("--steps", help="Sampling steps; repeat for several.")] = [4],  # noqa: B006
    backends: Annotated[list[str], typer.Option("--backend", help="torch | onnxruntime | tensorrt.")] = [  # noqa: B006
        "torch",
        "onnxruntime",
        "tensorrt",
    ],
    repeats: Annotated[int, typer.Option(help="Timed repetitions (median reported).")] = 5,
    rounds: Annotated[
        int, typer.Option(help="Fresh processes per backend, alternating; rows report the median round.")
    ] = 1,
    warmup: Annotated[int, typer.Option(help="Untimed calls first.")] = 1,
    device: Annotated[str, typer.Option(help="cpu | cuda.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 (torch backend, CUDA).")] = "fp32",
    photo_width: Annotated[
        int, typer.Option(help="Photo row: one restoration with the model's settings, in s/MP; 0 = no row.")
    ] = 0,
    photo_height: Annotated[int, typer.Option(help="Height of the photo row.")] = 866,
    photo_repeats: Annotated[int, typer.Option(help="Timed restorations of the photo (median).")] = 1,
    intra_op_threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0 = default).")] = 0,
    ort_optimization: Annotated[str, typer.Option(help="disable | basic | extended | all.")] = "all",
    sdxl_size: Annotated[
        bool,
        typer.Option(
            "--sdxl-size",
            help="Random-weight SDXL-size model (torch only; for GPU timings without SDXL weights).",
        ),
    ] = False,
    isolate: Annotated[
        bool,
        typer.Option(help="Time each backend in its own process (one backend's state skews another)."),
    ] = True,
    onnx_dir: Annotated[Path, typer.Option(help="ONNX graphs.")] = paths.ONNX,
    engine_dir: Annotated[Path, typer.Option(help="TensorRT engine root.")] = paths.ENGINES,
    model: ModelOption = paths.MODEL,
) -> None:
    """Time the LQ encoder, one CFG denoiser step, the decoder and the whole pipeline per backend, with
    the model's recorded settings (the `bench` stage runs the same code on the `bench` params)."""
    with reported_errors():
        import dataclasses

        from unildiff.bench.config import BenchConfig
        from unildiff.bench.run import photo_bench, run_bench, write_bench
        from unildiff.export.config import OnnxRuntimeConfig

        config = BenchConfig(
            sizes=tuple(sizes),
            steps=tuple(steps),
            repeats=repeats,
            rounds=rounds,
            warmup=warmup,
            backends=tuple(backends),
            device=device,
            dtype=dtype,
            onnxruntime=OnnxRuntimeConfig(intra_op_threads=intra_op_threads, optimization=ort_optimization),
            photo_width=photo_width,
            photo_height=photo_height,
            photo_repeats=photo_repeats,
        )
        photo_row = photo_bench(config)
        if sdxl_size:
            from unildiff.bench.sdxl_size import build_sdxl_size_model
            from unildiff.pipeline_unildiff import pipeline_from_model

            torch_only = dataclasses.replace(config, backends=("torch",))
            pipeline = pipeline_from_model(build_sdxl_size_model(device))  # the paper's settings
            report = run_bench(
                pipeline, torch_only, onnx_dir=onnx_dir, engine_dir=engine_dir, photo=photo_row
            )
            for backend in [name for name in config.backends if name != "torch"]:
                report["skipped"][backend] = (
                    "--sdxl-size has no exported graphs: it times the torch backend only"
                )
        elif isolate:
            from unildiff.bench.isolated import run_bench_isolated

            report = run_bench_isolated(
                model, config, onnx_dir=onnx_dir, engine_dir=engine_dir, photo=photo_row
            )
        else:
            from unildiff.pipeline_unildiff import UniLDiffPipeline

            pipeline = UniLDiffPipeline.from_pretrained(model)
            report = run_bench(pipeline, config, onnx_dir=onnx_dir, engine_dir=engine_dir, photo=photo_row)
        write_bench(report, output)
        for backend, rows in report["end_to_end"].items():
            for key, row in rows.items():
                typer.echo(
                    f"{backend:>12} {key:>16}: {row['median_ms']:10.2f} ms, "
                    f"loop overhead {row['loop_overhead_percent']:.2f}%"
                )
        for backend, reason in report["skipped"].items():
            typer.echo(f"{backend:>12}: skipped ({reason})")


def register(app: typer.Typer) -> None:
    """Add ``export onnx|tensorrt`` and ``bench`` to ``app``."""
    app.add_typer(export_app, name="export")
    app.command("bench")(bench)
