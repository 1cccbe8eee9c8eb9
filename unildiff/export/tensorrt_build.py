"""Build TensorRT engines from the exported ONNX graphs (TensorRT 10 and 11 Python API), and the engine
sidecar ``engines.json`` that the TensorRT backend (:mod:`unildiff.backends.tensorrt`) reads back.

TensorRT 11 removed weak typing (``BuilderFlag.FP16``/``BF16``, precision constraints): every network is
strongly typed and each layer runs in the type the ONNX graph gives it. So an fp16 engine needs an fp16
graph (``unildiff export onnx --sdxl-size`` exports the denoiser in fp16 by default); on TensorRT 10 an
fp32 graph can still be built with the ``FP16`` flag. :func:`strongly_typed` decides, and refuses a
precision the graph cannot give, naming the param.

TensorRT and CUDA are imported lazily: on a host without them every entry point raises
:class:`~unildiff.errors.BackendUnavailableError` with one line, and nothing else in the package
needs them. The profile shapes, engine naming, sidecar and the checks that refuse a foreign engine or
an out-of-profile shape are pure Python, tested on any machine.
"""

from __future__ import annotations

import json
import re
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.progress import Progress

from unildiff.errors import BackendUnavailableError, ConfigError, MissingArtifactError
from unildiff.export.config import Precision, TensorRTConfig, TensorRTProfileConfig
from unildiff.export.specs import RESTORATION_GRAPHS, ExportManifest, GraphName, GraphSpec
from unildiff.utils.atomic import atomic_dir, atomic_write_bytes, atomic_write_json

TIMING_CACHE_FILENAME = "timing.cache"
MANIFEST_FILENAME = "engines.json"
ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def gpu_slug(gpu_name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` → ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "unknown-gpu"


def engine_dir_name(gpu_name: str, tensorrt_version: str) -> str:
    """Folder of one engine set, e.g. ``nvidia-h100-80gb-hbm3_trt10.3.0``."""
    return f"{gpu_slug(gpu_name)}_trt{tensorrt_version}"


def graph_batch_range(graph: GraphName, profile: TensorRTProfileConfig) -> tuple[int, int, int]:
    """(min, opt, max) batch of ``graph``: the denoiser runs conditional + unconditional in one batch."""
    if graph is GraphName.DENOISER:
        return profile.min_images, 2 * profile.opt_images, 2 * profile.max_images
    return profile.min_images, profile.opt_images, profile.max_images


def profile_shapes(spec: GraphSpec, profile: TensorRTProfileConfig) -> dict[str, ShapeRange]:
    """(min, opt, max) shape of every input of ``spec`` under ``profile``."""
    batches = graph_batch_range(spec.name, profile)
    sizes = (profile.min_image_size, profile.opt_image_size, profile.max_image_size)
    return {
        tensor.name: tuple(  # type: ignore[misc]
            tensor.resolve(batch=batch, height=size, width=size)
            for batch, size in zip(batches, sizes, strict=True)
        )
        for tensor in spec.inputs
    }


def check_shape_in_range(
    graph: GraphName, input_name: str, shape: tuple[int, ...], shape_range: ShapeRange
) -> None:
    """Refuse ``shape`` when any axis lies outside the profile, naming the range and the param to change.

    Raises:
        ConfigError: naming the graph, the input, its shape and the profile's min/max.
    """
    minimum, _, maximum = shape_range
    inside = len(shape) == len(minimum) and all(
        low <= size <= high for size, low, high in zip(shape, minimum, maximum, strict=True)
    )
    if not inside:

        def text(dims: tuple[int, ...]) -> str:
            return "x".join(map(str, dims))

        raise ConfigError(
            f"{graph.value} input {input_name!r} of shape {text(tuple(shape))} is outside the TensorRT "
            f"engine profile (min {text(minimum)}, max {text(maximum)}); rebuild with other "
            "tensorrt.profile sizes"
        )


@dataclass(frozen=True)
class EngineRecord:
    """One built engine: file name (relative to the manifest), precision and its input ranges."""

    plan: str
    precision: str
    shapes: dict[str, ShapeRange]


@dataclass(frozen=True)
class EngineManifest:
    """The sidecar ``engines.json`` written next to the ``.plan`` files."""

    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    pixel_multiple: int
    engines: dict[str, EngineRecord] = field(default_factory=dict)

    def save(self, folder: Path) -> Path:
        """Write ``<folder>/engines.json`` atomically."""
        return atomic_write_json(Path(folder) / MANIFEST_FILENAME, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> EngineManifest:
        """Read ``<folder>/engines.json``; a missing file names the stage that builds engines."""
        path = Path(folder) / MANIFEST_FILENAME
        if not path.is_file():
            raise MissingArtifactError(
                f"{path} not found: build TensorRT engines with `unildiff export tensorrt` "
                "(or `dvc repro deploy/dvc.yaml` on a CUDA host)"
            )
        payload = json.loads(path.read_text())
        engines = {
            name: EngineRecord(
                plan=record["plan"],
                precision=record["precision"],
                shapes={key: tuple(tuple(dims) for dims in value) for key, value in record["shapes"].items()},
            )
            for name, record in payload["engines"].items()
        }
        return cls(
            payload["gpu_name"],
            payload["compute_capability"],
            payload["tensorrt_version"],
            int(payload["pixel_multiple"]),
            engines,
        )

    def check_compatible(self, gpu_name: str, tensorrt_version: str) -> None:
        """Refuse engines built for another GPU or TensorRT version, naming both sides.

        Raises:
            BackendUnavailableError: when the GPU name or TensorRT version differ.
        """
        if self.gpu_name != gpu_name or self.tensorrt_version != tensorrt_version:
            raise BackendUnavailableError(
                f"TensorRT engines were built for {self.gpu_name!r} with TensorRT {self.tensorrt_version}, "
                f"but this host has {gpu_name!r} with TensorRT {tensorrt_version}: rebuild them with "
                "`unildiff export tensorrt`"
            )


def find_engine_dir(engine_root: Path, gpu_name: str, tensorrt_version: str) -> Path:
    """The engine folder for this GPU and TensorRT version under ``engine_root``.

    When the exact folder is missing but a single other engine set exists, that folder is returned so
    :meth:`EngineManifest.check_compatible` can name both versions in its refusal.
    """
    engine_root = Path(engine_root)
    exact = engine_root / engine_dir_name(gpu_name, tensorrt_version)
    if (exact / MANIFEST_FILENAME).is_file():
        return exact
    others = sorted(path.parent for path in engine_root.glob(f"*/{MANIFEST_FILENAME}"))
    if others:
        return others[0]
    raise MissingArtifactError(
        f"no TensorRT engines under {engine_root}: build them with `unildiff export tensorrt` "
        "(or `dvc repro deploy/dvc.yaml` on a CUDA host)"
    )


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


ONNX_FLOAT_TYPES = {1: "fp32", 10: "fp16", 16: "bf16"}
"""``onnx.TensorProto`` data types of float weights: FLOAT, FLOAT16, BFLOAT16."""


def graph_float_type(onnx_path: Path) -> str:
    """``fp32`` | ``fp16`` | ``bf16``: the float type holding most of the graph's weights (elements).

    Reads the graph without its external data (only the initializers' declared types and shapes).
    """
    import math

    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    counts: dict[str, int] = {}
    for tensor in model.graph.initializer:
        kind = ONNX_FLOAT_TYPES.get(tensor.data_type)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + math.prod(tensor.dims)
    return max(counts, key=counts.get) if counts else "fp32"


def strongly_typed(graph: GraphName, precision: Precision, graph_type: str, weak_typing: bool) -> bool:
    """Whether to build ``graph`` as a strongly typed network (its ONNX types decide every layer's type).

    Args:
        graph: which graph (for the error message).
        precision: the requested ``tensorrt.<graph>_precision``.
        graph_type: :func:`graph_float_type` of its ONNX file.
        weak_typing: whether this TensorRT still has weak typing (``BuilderFlag.FP16``: TensorRT 10).

    Raises:
        ConfigError: the precision cannot come from this graph (names the param and the way out).
    """
    param = f"tensorrt.{'lq_encoder' if graph is GraphName.LQ_ENCODER else graph.value}_precision"
    low = {Precision.FP16: "fp16", Precision.BF16: "bf16"}
    if graph_type != "fp32":
        if low.get(precision) != graph_type:
            raise ConfigError(
                f"{graph.value}.onnx holds {graph_type} weights, so its engine is {graph_type} (strongly "
                f"typed); {param}={precision.value} needs a graph exported in that type"
            )
        return True
    if precision is Precision.BF16 or (precision is Precision.FP16 and not weak_typing):
        raise ConfigError(
            f"{param}={precision.value} needs a {precision.value} ONNX graph on TensorRT 11 (strongly typed "
            f"networks only) but {graph.value}.onnx is fp32: export it in {precision.value} "
            f"(unildiff export onnx --sdxl-size --dtype {precision.value}) or set {param}=tf32"
        )
    return not weak_typing


def _build_one(
    trt, logger, onnx_path: Path, shapes, precision: Precision, config: TensorRTConfig, cache_bytes, graph
):
    """Parse one ONNX graph and build a serialized engine; returns (plan bytes, timing cache bytes)."""
    builder = trt.Builder(logger)
    weak_typing = hasattr(trt.BuilderFlag, "FP16")  # removed in TensorRT 11
    typed = strongly_typed(graph, precision, graph_float_type(onnx_path), weak_typing)
    # explicit batch is the only mode since TensorRT 10; STRONGLY_TYPED is the only mode in 11 (flag ignored)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data tensors next to the graph (graphs > 2 GB)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise BackendUnavailableError(f"TensorRT could not parse {onnx_path}: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_gib * (1 << 30)))
    builder_config.builder_optimization_level = config.builder_optimization_level
    if precision is Precision.FP16 and not typed:  # TensorRT 10 weak typing: fp32 graph, fp16 kernels
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
            onnx_path = Path(onnx_dir) / f"{graph.value}.onnx"
            plan, cache_bytes = _build_one(
                trt, logger, onnx_path, shapes, precision, config, cache_bytes, graph
            )
            atomic_write_bytes(staging / f"{graph.value}.plan", plan)
            records[graph.value] = EngineRecord(f"{graph.value}.plan", precision.value, shapes)
            atomic_write_bytes(cache_path, cache_bytes)
            progress.advance(task)
        EngineManifest(gpu_name, capability, trt.__version__, export_manifest.pixel_multiple, records).save(
            staging
        )
    return folder
