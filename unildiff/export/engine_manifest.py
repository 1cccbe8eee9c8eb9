"""The pure-Python half of TensorRT: profile shapes, engine naming, the engine sidecar and the
checks that refuse a foreign engine or an out-of-profile shape. Nothing here imports TensorRT, so it
is tested on any machine.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from unildiff.errors import BackendUnavailableError, ConfigError, MissingArtifactError
from unildiff.export.config import TensorRTProfileConfig
from unildiff.export.specs import GraphName, GraphSpec
from unildiff.utils.atomic import atomic_write_json

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
