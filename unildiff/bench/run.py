"""``unildiff bench``: time the three graphs and the whole pipeline on every available backend.

Components per backend and size: the LQ encoder (batch 1), one denoiser step with CFG (batch 2) and
the decoder (batch 1). End to end per step count: ``RestorationPipeline`` on one image, with the
sampling-loop overhead (wall time not spent in graph calls or prompt encoding). Every backend gets
the same inputs (computed once by the torch graphs); FLOPs are counted once on the torch modules.

The optional **photo** row (:class:`PhotoBench`) restores one 1-megapixel photo with the model's own
recorded settings (``UniLDiffPipeline.sampling`` and ``start``), automatic tiling included, and reports
seconds per megapixel.

The size rows time ``bench.steps`` denoising steps each. A model trained to start from its LQ latent
runs only the steps at or below its start timestep, so those rows start from noise instead, to run
every step: they measure time, not quality (the report's ``sampling.timing_rows`` says so).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from unildiff.backends import Backend, open_backend
from unildiff.backends.torch import TORCH_DTYPES, CastGraphs
from unildiff.bench.config import BenchConfig, config_description
from unildiff.bench.timing import (
    ComponentResult,
    TimedGraphs,
    count_flops,
    host_description,
    measure,
    peak_memory_bytes,
    synchronize,
)
from unildiff.errors import ConfigError, UniLDiffError
from unildiff.utils.atomic import atomic_write_json

PROMPT = "remove noise"


@dataclass(frozen=True)
class PhotoBench:
    """The photo row: one restoration of a ``width`` × ``height`` photo, in seconds per megapixel.

    The default is a 4:3 photo of 1.0 MP whose sides are no multiple of the model's (padding is timed
    too). One restoration takes tens of seconds on a CPU, so it runs ``repeats`` times after no warm-up;
    with ``bench.rounds`` each backend's row is the median of its rounds' processes.

    Attributes:
        width: photo width in pixels.
        height: photo height in pixels.
        repeats: timed restorations; the median is reported.
    """

    width: int = 1155
    height: int = 866
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.repeats < 1:
            raise ConfigError(
                f"photo bench needs width, height >= 16 and repeats >= 1, got "
                f"{self.width}x{self.height}, {self.repeats} repeats"
            )

    @property
    def key(self) -> str:
        """The row's name in ``reports/bench.json``, e.g. ``1155x866``."""
        return f"{self.width}x{self.height}"


def photo_bench(config: BenchConfig) -> PhotoBench | None:
    """The photo row ``config`` asks for (``bench.photo_*``), or ``None`` when ``photo_width`` is 0."""
    if not config.photo_width:
        return None
    return PhotoBench(config.photo_width, config.photo_height, config.photo_repeats)


def open_backends(model, config: BenchConfig, onnx_dir: Path, engine_dir: Path):
    """``({backend: graphs}, {backend: reason skipped})`` for ``config.backends``.

    The torch graphs run in ``config.dtype`` (:class:`CastGraphs`); ONNX Runtime prefers CUDA only when
    both its config and ``config.device`` ask for it.
    """
    onnxruntime = dataclasses.replace(
        config.onnxruntime, prefer_cuda=config.onnxruntime.prefer_cuda and config.device == "cuda"
    )
    opened, skipped = {}, {}
    for name in config.backends:
        backend = Backend(name)
        try:
            graphs = open_backend(
                backend,
                model=model,
                device=config.device,
                onnx_dir=onnx_dir,
                engine_dir=engine_dir,
                onnxruntime=onnxruntime,
            )
            if backend is Backend.TORCH and config.dtype != "fp32":
                graphs = CastGraphs(graphs, TORCH_DTYPES[config.dtype])
            opened[name] = graphs
        except UniLDiffError as error:
            skipped[name] = str(error)
    return opened, skipped


def _component_inputs(reference, prompt_encoder, size: int, device: str):
    """Inputs of the three components at ``size``, computed by the torch graphs (float32)."""
    from unildiff.models.text import make_time_ids

    generator = torch.Generator().manual_seed(0)
    lq = (torch.rand(1, 3, size, size, generator=generator) * 2 - 1).to(device)
    encoding = reference.encode_lq(lq)
    embeds, pooled = prompt_encoder(["", PROMPT])
    sample = torch.randn((2, *encoding.lq_latent.shape[1:]), generator=generator).to(device)
    denoise = (
        sample,
        torch.full((2,), 499.0, device=device),
        encoding.lq_features.repeat(2, 1, 1, 1),
        embeds.to(device),
        pooled.to(device),
        make_time_ids(size, size, 2).to(device),
    )
    return lq, denoise, (encoding.lq_latent, encoding.skips)


#: Overrides of the size rows for a model that starts from its LQ latent (see the module docstring).
TIMING_ROWS_START = {"start": "noise"}


def _sampler(pipeline, graphs, overrides: dict):
    """``pipeline.sampler`` on ``graphs``; the size rows' noise start (timing only) is allowed silently."""
    if not overrides.get("start"):
        return pipeline.sampler(graphs=graphs, **overrides)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="untrained start", category=UserWarning)
        return pipeline.sampler(graphs=graphs, allow_untrained_start=True, **overrides)


def _time_restorations(
    pipeline, graphs, lq, device: str, repeats: int, warmup=0, progress=None, **overrides
) -> tuple[float, float, TimedGraphs, object]:
    """Restore ``lq`` [-1, 1], (1, 3, H, W) ``warmup`` times untimed, then ``repeats`` times timed.

    ``overrides`` are sampling settings of :meth:`UniLDiffPipeline.sampler` (none: the model's own).

    Returns:
        (median wall time in ms, median sampling-loop overhead in % of it, the :class:`TimedGraphs`
        whose call counts are those of the last timed restoration, the sampler).
    """
    timed = TimedGraphs(graphs, device)
    sampler = _sampler(pipeline, timed, overrides)
    sampler.prompt_encoder = timed.timed_prompt_encoder(sampler.prompt_encoder)
    seed = sampler.config.seed

    def run():
        return sampler(lq, PROMPT, torch.Generator().manual_seed(seed), progress=progress)

    with torch.no_grad():
        for _ in range(warmup):
            run()
        totals, overheads = [], []
        for _ in range(repeats):
            timed.seconds, timed.calls, timed.denoise_calls = 0.0, 0, 0
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            total = time.perf_counter() - start
            totals.append(total * 1000.0)
            overheads.append(100.0 * (total - timed.seconds) / total)
    return statistics.median(totals), statistics.median(overheads), timed, sampler


def _end_to_end(pipeline, graphs, lq, config: BenchConfig, overrides: dict) -> dict:
    """One row of ``end_to_end``: ``lq`` restored with ``overrides`` (untiled), warm-up first."""
    median, overhead, timed, _ = _time_restorations(
        pipeline, graphs, lq, config.device, config.repeats, config.warmup, **overrides
    )
    return {
        "median_ms": round(median, 3),
        "images_per_s": round(1000.0 / median, 4),
        "loop_overhead_percent": round(overhead, 3),
        "graph_calls": timed.calls,
        "denoiser_calls": timed.denoise_calls,
    }


def photo_image(photo: PhotoBench, device: str) -> torch.Tensor:
    """A smooth synthetic photo [-1, 1], (1, 3, height, width) (graph costs do not depend on content)."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, max(2, photo.height // 32), max(2, photo.width // 32), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(photo.height, photo.width), mode="bilinear")
    return (image * 2 - 1).to(device)


def _photo(pipeline, graphs, photo: PhotoBench, device: str, progress):
    """Restore the photo ``photo.repeats`` times with the model's own settings (tiling included)."""
    from unildiff.tiling import pad_to_multiple, tile_grid

    sampling = pipeline.sampling
    lq = photo_image(photo, device)
    padded, _ = pad_to_multiple(lq, graphs.pixel_multiple)
    tiles = tile_grid(*padded.shape[-2:], sampling.tile_side, sampling.tile_overlap, graphs.pixel_multiple)
    median, overhead, timed, _ = _time_restorations(
        pipeline, graphs, lq, device, photo.repeats, progress=progress
    )
    megapixels = photo.width * photo.height / 1e6
    return {
        "median_ms": round(median, 3),
        "seconds_per_megapixel": round(median / 1000.0 / megapixels, 4),
        "megapixels": round(megapixels, 6),
        "width": photo.width,
        "height": photo.height,
        "steps": sampling.steps,
        "tile_side": sampling.tile_side,
        "tile_overlap": sampling.tile_overlap,
        "tiles": len(tiles),
        "denoiser_calls": timed.denoise_calls,
        "loop_overhead_percent": round(overhead, 3),
        "peak_memory_mb": round(peak_memory_bytes(device) / 2**20, 2),
    }


def _call_encode(graphs, lq):
    return graphs.encode_lq(lq)


def _call_denoise(graphs, arguments):
    return graphs.denoise(*arguments)


def _call_decode(graphs, latents, skips):
    return graphs.decode(latents, skips)


def run_bench(
    pipeline,
    config: BenchConfig,
    *,
    onnx_dir: Path,
    engine_dir: Path,
    photo: PhotoBench | None = None,
) -> dict:
    """Benchmark ``model`` on every backend of ``config`` (see the module docstring).

    Args:
        pipeline: the model (:class:`~unildiff.pipeline_unildiff.UniLDiffPipeline`); moved to
            ``config.device``. The size rows replace its steps by each of ``config.steps`` and never
            tile; the photo row restores with its settings as recorded.
        config: sizes, step counts, repeats, backends, device and dtype.
        onnx_dir: ``export/onnx`` for the onnxruntime backend.
        engine_dir: ``export/engines`` for the tensorrt backend.
        photo: the photo row, timed last in each backend's process (its peak RSS bounds the whole
            process's); ``None`` leaves it out.

    Returns:
        The JSON-ready report written to ``reports/bench.json``.
    """
    from rich.progress import Progress

    from unildiff.models.text import encode_prompt

    if config.rounds != 1:
        raise ConfigError(
            f"bench.rounds={config.rounds} needs one process per backend (run_bench_isolated, "
            "`unildiff bench --isolate`)"
        )
    device = config.device
    pipeline.to(device)
    model = pipeline.model
    reference = open_backend(Backend.TORCH, model=model, device=device)
    prompt_encoder = functools.partial(encode_prompt, model.prior)
    row_overrides = TIMING_ROWS_START if pipeline.start.mode == "lq" else {}
    opened, skipped = open_backends(model, config, onnx_dir, engine_dir)
    components: dict = {name: {} for name in opened}
    end_to_end: dict = {name: {} for name in opened}
    total = len(config.sizes) * len(opened) * (3 + len(config.steps)) + (len(opened) if photo else 0)
    with Progress() as progress:
        task = progress.add_task("bench", total=total)
        for size in config.sizes:
            lq, denoise_args, (latents, skips) = _component_inputs(reference, prompt_encoder, size, device)
            calls = {
                "lq_encoder": (1, functools.partial(_call_encode, lq=lq)),
                "denoiser_step_cfg": (1, functools.partial(_call_denoise, arguments=denoise_args)),
                "decoder": (1, functools.partial(_call_decode, latents=latents, skips=skips)),
            }
            flops = {
                name: count_flops(functools.partial(call, reference)) for name, (_, call) in calls.items()
            }
            for backend, graphs in opened.items():
                row = components[backend].setdefault(f"{size}px", {})
                for name, (images, call) in calls.items():
                    timing = measure(
                        functools.partial(call, graphs),
                        repeats=config.repeats,
                        warmup=config.warmup,
                        device=device,
                    )
                    row[name] = ComponentResult.from_timing(timing, images, flops[name]).to_dict()
                    progress.advance(task)
                for steps in config.steps:
                    overrides = {**row_overrides, "steps": steps, "tile": 0, "auto_tile": 0}
                    result = _end_to_end(pipeline, graphs, lq, config, overrides)
                    denoiser_flops = result["denoiser_calls"] * flops["denoiser_step_cfg"]
                    graph_flops = flops["lq_encoder"] + denoiser_flops + flops["decoder"]
                    result["flops_per_image_graphs"] = graph_flops
                    result["achieved_gflops_per_s"] = round(graph_flops / result["median_ms"] * 1e-6, 4)
                    end_to_end[backend][f"{size}px_{steps}steps"] = result
                    progress.advance(task)
        photos: dict = {}
        if photo is not None:
            for backend, graphs in opened.items():
                progress.update(task, description=f"bench: {backend} photo {photo.key}")
                row = _photo(pipeline, graphs, photo, device, progress)
                photos[backend] = {photo.key: row}
                progress.advance(task)
    report = {
        "host": host_description(device),
        "config": config_description(config),
        "sampling": {
            **dataclasses.asdict(pipeline.sampling),
            "start": dataclasses.asdict(pipeline.start),
            "timing_rows": (
                "start from noise so that every step runs (time, not quality)"
                if row_overrides
                else "as recorded"
            ),
        },
        "components": components,
        "end_to_end": end_to_end,
        "process_per_backend": False,
        "speedup_vs_torch": speedups(end_to_end),
        "skipped": skipped,
    }
    if photo is not None:
        report["photo"] = photos
    return report


def speedups(end_to_end: dict) -> dict:
    """End-to-end torch median / backend median per size and step count (> 1 = faster than torch)."""
    result: dict = {}
    torch_rows = end_to_end.get("torch", {})
    for backend, rows in end_to_end.items():
        if backend == "torch":
            continue
        result[backend] = {
            key: round(torch_rows[key]["median_ms"] / row["median_ms"], 3)
            for key, row in rows.items()
            if key in torch_rows and row["median_ms"] > 0 and math.isfinite(row["median_ms"])
        }
    return result


def write_bench(report: dict, path: Path) -> Path:
    """Write the report atomically."""
    return atomic_write_json(path, report)
