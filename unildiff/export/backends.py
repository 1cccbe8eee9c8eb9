"""``open_graphs``: the exported graphs of one backend, ready for ``RestorationPipeline``."""

from __future__ import annotations

from pathlib import Path

from unildiff.errors import BackendUnavailableError, ConfigError
from unildiff.export.config import OnnxRuntimeConfig


def open_graphs(
    backend,
    *,
    onnx_dir: Path = Path("export/onnx"),
    engine_dir: Path = Path("export/engines"),
    device: str = "cpu",
    onnxruntime: OnnxRuntimeConfig | None = None,
):
    """Open the ONNX Runtime sessions or TensorRT engines behind the ``RestorationGraphs`` protocol.

    The torch backend is built from the model by ``unildiff.pipeline.TorchGraphs.from_model``; this
    function serves the two exported backends.

    Args:
        backend: ``unildiff.pipeline.Backend.ONNXRUNTIME`` or ``Backend.TENSORRT``.
        onnx_dir: the export stage's ``export/onnx``.
        engine_dir: ``export/engines`` (the GPU- and version-named engine folder is chosen inside).
        device: ``cpu`` or ``cuda``; ONNX Runtime uses CUDA only when asked and onnxruntime-gpu is present,
            TensorRT needs ``cuda``.
        onnxruntime: ONNX Runtime session options.

    Raises:
        BackendUnavailableError: TensorRT/CUDA absent, or engines built elsewhere.
        MissingArtifactError: graphs or engines not built (names the stage or command).
        ConfigError: the torch backend was passed here.
    """
    from unildiff.pipeline import Backend

    backend = Backend(backend)
    check_available(backend, device)
    if backend is Backend.ONNXRUNTIME:
        from unildiff.export.ort_graphs import OnnxRuntimeGraphs

        config = onnxruntime or OnnxRuntimeConfig(prefer_cuda=device == "cuda")
        return OnnxRuntimeGraphs(Path(onnx_dir), config)
    if backend is Backend.TENSORRT:
        from unildiff.export.tensorrt_graphs import TensorRTGraphs

        return TensorRTGraphs(Path(engine_dir))
    raise ConfigError(
        "open_graphs serves onnxruntime and tensorrt; build torch graphs with TorchGraphs.from_model"
    )


def check_available(backend, device: str) -> None:
    """Raise when ``backend`` cannot run on ``device`` here, found without loading a model or a graph.

    It catches what needs no artifacts (TensorRT on a CPU device, TensorRT not installed), so callers
    such as the per-process bench skip such a backend without starting a process for it.

    Raises:
        BackendUnavailableError: names what is missing.
    """
    from unildiff.pipeline import Backend

    if Backend(backend) is Backend.TENSORRT:
        if device != "cuda":
            raise BackendUnavailableError(f"the tensorrt backend runs on CUDA only, got --device {device}")
        from unildiff.export.tensorrt_build import import_tensorrt

        import_tensorrt()
