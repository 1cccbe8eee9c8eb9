"""Build TensorRT engines from the exported ONNX graphs (TensorRT 10 Python API).

TensorRT and CUDA are imported lazily: on a host without them every entry point raises
:class:`~unildiff.errors.BackendUnavailableError` with one line, and nothing else in the package
needs them.
"""

from __future__ import annotations

import types
from pathlib import Path

from rich.progress import Progress

from unildiff.errors import BackendUnavailableError, MissingArtifactError
from unildiff.export.config import Precision, TensorRTConfig
from unildiff.export.engine_manifest import (
    EngineManifest,
    EngineRecord,
    engine_dir_name,
    profile_shapes,
)
from unildiff.export.specs import RESTORATION_GRAPHS, ExportManifest, GraphName
from unildiff.utils.atomic import atomic_dir, atomic_write_bytes

TIMING_CACHE_FILENAME = "timing.cache"


def import_tensorrt() -> types.ModuleType:
    """Import ``tensorrt`` or raise BackendUnavailableError with the install hint."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(
            "TensorRT is not installed here (pip install 'unildiff[tensorrt]' on a CUDA host)"
        ) from None
    return tensorrt


def cuda_device_identity() -> tuple[str, str]:
    """(GPU name, compute capability ``"9.0"``) of the current CUDA device, or BackendUnavailableError."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("CUDA is not available here: TensorRT needs an NVIDIA GPU")
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), f"{major}.{minor}"


def graph_precision(graph: GraphName, config: TensorRTConfig) -> Precision:
    """The precision ``config`` gives ``graph``."""
    if graph is GraphName.DENOISER:
        return config.denoiser_precision
    if graph is GraphName.DECODER:
        return config.decoder_precision
    return config.lq_encoder_precision


def _build_one(
    trt, logger, onnx_path: Path, shapes, precision: Precision, config: TensorRTConfig, cache_bytes
):
    """Parse one ONNX graph and build a serialized engine; returns (plan bytes, timing cache bytes)."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data tensors next to the graph (graphs > 2 GB)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise BackendUnavailableError(f"TensorRT could not parse {onnx_path}: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_gib * (1 << 30)))
    builder_config.builder_optimization_level = config.builder_optimization_level
    if precision is Precision.FP16:
        builder_config.set_flag(trt.BuilderFlag.FP16)
    if precision is Precision.FP32:
        builder_config.clear_flag(trt.BuilderFlag.TF32)
    else:
        builder_config.set_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        minimum, optimum, maximum = shapes[name]
        profile.set_shape(name, minimum, optimum, maximum)
    builder_config.add_optimization_profile(profile)
    timing_cache = builder_config.create_timing_cache(cache_bytes)
    builder_config.set_timing_cache(timing_cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise BackendUnavailableError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(plan), bytes(timing_cache.serialize())


def build_engines(onnx_dir: Path, engine_root: Path, config: TensorRTConfig) -> Path:
    """Build lq_encoder / denoiser / decoder engines into ``<engine_root>/<gpu>_trt<version>/``.

    The folder holds ``<graph>.plan``, ``engines.json`` (GPU, compute capability, TensorRT version,
    each engine's precision and input ranges) and is replaced atomically; a timing cache shared by
    all builds lives at ``<engine_root>/timing.cache``.

    Args:
        onnx_dir: folder of the ``export`` stage (``<graph>.onnx`` + ``graphs.json``).
        engine_root: ``export/engines``.
        config: profile, precisions and builder settings.

    Returns:
        The engine folder.

    Raises:
        BackendUnavailableError: TensorRT or CUDA absent, or a build failed.
        MissingArtifactError: the ONNX graphs are missing (names the export stage).
    """
    trt = import_tensorrt()
    gpu_name, capability = cuda_device_identity()
    export_manifest = ExportManifest.load(Path(onnx_dir))
    specs = export_manifest.graphs
    for graph in RESTORATION_GRAPHS:
        if graph not in specs or not (Path(onnx_dir) / f"{graph.value}.onnx").is_file():
            raise MissingArtifactError(f"{onnx_dir}/{graph.value}.onnx not found: run the export stage")
    engine_root = Path(engine_root)
    cache_path = engine_root / TIMING_CACHE_FILENAME
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    logger = trt.Logger(trt.Logger.WARNING)
    folder = engine_root / engine_dir_name(gpu_name, trt.__version__)
    records = {}
    with atomic_dir(folder) as staging, Progress() as progress:
        task = progress.add_task("building TensorRT engines", total=len(RESTORATION_GRAPHS))
        for graph in RESTORATION_GRAPHS:
            precision = graph_precision(graph, config)
            shapes = profile_shapes(specs[graph], config.profile)
            plan, cache_bytes = _build_one(
                trt, logger, Path(onnx_dir) / f"{graph.value}.onnx", shapes, precision, config, cache_bytes
            )
            atomic_write_bytes(staging / f"{graph.value}.plan", plan)
            records[graph.value] = EngineRecord(f"{graph.value}.plan", precision.value, shapes)
            atomic_write_bytes(cache_path, cache_bytes)
            progress.advance(task)
        EngineManifest(gpu_name, capability, trt.__version__, export_manifest.pixel_multiple, records).save(
            staging
        )
    return folder
