"""What each exported graph takes and returns: names and symbolic axes, saved as ``graphs.json``.

An axis is either a fixed size (``int``) or a symbol: ``"batch"``, ``"height/F"`` or ``"width/F"``
(the image side divided by ``F``; ``"height"`` means ``F = 1``). TensorRT profiles and the dynamic-axes
of the ONNX export are both derived from these specs, so they never disagree.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

from unildiff.errors import MissingArtifactError
from unildiff.utils.atomic import atomic_write_json

Axis = int | str
SPECS_FILENAME = "graphs.json"


class GraphName(str, enum.Enum):
    """The exported graphs; the value is the file stem under ``export/onnx/``."""

    LQ_ENCODER = "lq_encoder"
    DENOISER = "denoiser"
    DECODER = "decoder"
    TEXT_ENCODER = "text_encoder"
    TEXT_ENCODER_2 = "text_encoder_2"


RESTORATION_GRAPHS = (GraphName.LQ_ENCODER, GraphName.DENOISER, GraphName.DECODER)
"""The three graphs a backend runs (text encoding stays with the prompt encoder)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name and axes (see the module docstring)."""

    name: str
    axes: tuple[Axis, ...]

    def resolve(self, *, batch: int, height: int, width: int) -> tuple[int, ...]:
        """The concrete shape for a batch size and an image size in pixels."""
        shape = []
        for axis in self.axes:
            if isinstance(axis, int):
                shape.append(axis)
            elif axis == "batch":
                shape.append(batch)
            else:
                side, _, divisor = axis.partition("/")
                size = height if side == "height" else width
                shape.append(size // int(divisor or 1))
        return tuple(shape)

    def dynamic_axes(self) -> dict[int, str]:
        """``{axis index: symbol}`` for ``torch.onnx.export(dynamic_axes=...)``."""
        return {
            index: axis.replace("/", "_div") for index, axis in enumerate(self.axes) if isinstance(axis, str)
        }


@dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one graph, in call order."""

    name: GraphName
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


def infer_axes(
    shape: tuple[int, ...], *, batch: int, height: int, width: int, spatial: bool
) -> tuple[Axis, ...]:
    """Name the axes of an example tensor: axis 0 is the batch; for image-like (4-D) tensors with
    ``spatial`` set, axes 2 and 3 are the height and width divided by a power of two.

    Args:
        shape: the example tensor's shape.
        batch: the example batch size (axis 0 must equal it).
        height: the example image height in pixels.
        width: the example image width in pixels.
        spatial: whether axes 2 and 3 scale with the image.
    """
    axes: list[Axis] = list(shape)
    if shape and shape[0] == batch:
        axes[0] = "batch"
    if spatial and len(shape) == 4:
        for index, (side, size) in ((2, ("height", height)), (3, ("width", width))):
            divisor = size // shape[index]
            if divisor * shape[index] != size:
                raise ValueError(f"axis {index} of shape {shape} does not divide the image side {size}")
            axes[index] = side if divisor == 1 else f"{side}/{divisor}"
    return tuple(axes)


@dataclass(frozen=True)
class ExportManifest:
    """``export/onnx/graphs.json``: every graph's spec, the exporter used, and the padding multiple.

    Attributes:
        graphs: the spec of each exported graph.
        exporters: ``"dynamo"`` or ``"torchscript"`` per graph.
        pixel_multiple: image sides the graphs accept are multiples of this (the pipeline pads to it).
        opset: the ONNX opset of every graph.
    """

    graphs: dict[GraphName, GraphSpec]
    exporters: dict[GraphName, str]
    pixel_multiple: int
    opset: int

    def save(self, folder: Path) -> Path:
        """Write ``<folder>/graphs.json`` atomically."""
        payload = {
            "pixel_multiple": self.pixel_multiple,
            "opset": self.opset,
            "graphs": {
                name.value: {
                    "exporter": self.exporters.get(name, ""),
                    "inputs": {tensor.name: list(tensor.axes) for tensor in spec.inputs},
                    "outputs": {tensor.name: list(tensor.axes) for tensor in spec.outputs},
                }
                for name, spec in self.graphs.items()
            },
        }
        return atomic_write_json(Path(folder) / SPECS_FILENAME, payload)

    @classmethod
    def load(cls, folder: Path) -> ExportManifest:
        """Read ``<folder>/graphs.json``; a missing file names the ``export`` stage."""
        path = Path(folder) / SPECS_FILENAME
        if not path.is_file():
            raise MissingArtifactError(f"{path} not found: run the export stage (dvc repro export)")
        payload = json.loads(path.read_text())
        graphs, exporters = {}, {}
        for key, value in payload["graphs"].items():
            name = GraphName(key)
            exporters[name] = value["exporter"]
            graphs[name] = GraphSpec(
                name=name,
                inputs=tuple(TensorSpec(n, tuple(axes)) for n, axes in value["inputs"].items()),
                outputs=tuple(TensorSpec(n, tuple(axes)) for n, axes in value["outputs"].items()),
            )
        return cls(graphs, exporters, int(payload["pixel_multiple"]), int(payload["opset"]))
