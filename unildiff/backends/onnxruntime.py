"""The ONNX Runtime backend: three ``InferenceSession``s behind the ``RestorationGraphs`` protocol.

``CUDAExecutionProvider`` is used when onnxruntime-gpu provides it (and the config allows it), the
CPU provider otherwise. Tensors cross as numpy arrays; results come back as float32 torch tensors on
the device the caller's inputs live on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unildiff.backends.exported import ExportedGraphs
from unildiff.errors import BackendUnavailableError, MissingArtifactError
from unildiff.export.config import OnnxRuntimeConfig, OrtExecutionOrder, OrtOptimization
from unildiff.export.specs import ExportManifest, GraphName

if TYPE_CHECKING:
    import onnxruntime
    import torch


def choose_providers(config: OnnxRuntimeConfig) -> list[str]:
    """Execution providers in preference order: CUDA when available and allowed, then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if config.prefer_cuda and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    return providers


def open_session(path: Path, config: OnnxRuntimeConfig) -> onnxruntime.InferenceSession:
    """Open one graph; a missing file names the export stage."""
    import onnxruntime

    if not Path(path).is_file():
        raise MissingArtifactError(f"{path} not found: run the export stage (dvc repro export)")
    options = onnxruntime.SessionOptions()
    levels = {
        OrtOptimization.DISABLE: onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
        OrtOptimization.BASIC: onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        OrtOptimization.EXTENDED: onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        OrtOptimization.ALL: onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options.graph_optimization_level = levels[config.optimization]
    orders = {
        OrtExecutionOrder.DEFAULT: onnxruntime.ExecutionOrder.DEFAULT,
        OrtExecutionOrder.PRIORITY_BASED: onnxruntime.ExecutionOrder.PRIORITY_BASED,
    }
    options.execution_order = orders[config.execution_order]
    options.enable_cpu_mem_arena = config.cpu_mem_arena
    options.enable_mem_pattern = config.mem_pattern
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = 1
    # Spinning workers keep the cores busy after each run and starve the torch work between graph calls
    # (prompt encoding, scheduler steps): measured 2-4x slower graphs inside the loop on 2 CPU cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=choose_providers(config)
        )
    except Exception as error:  # onnxruntime raises its own untyped errors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BackendUnavailableError(f"onnxruntime could not open {path}: {first_line}") from None


class OnnxSession:
    """One ONNX Runtime session called with torch tensors in the graph's input order.

    Args:
        path: the ``.onnx`` file.
        config: session options.
        input_names: every input the graph was exported with, in call order; inputs the exporter
            pruned (unused by the graph) are accepted and dropped. Defaults to the session's inputs.
    """

    def __init__(
        self, path: Path, config: OnnxRuntimeConfig, input_names: Sequence[str] | None = None
    ) -> None:
        self.session = open_session(path, config)
        self.input_types = {item.name: item.type for item in self.session.get_inputs()}
        self.input_names = list(input_names) if input_names else list(self.input_types)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        import torch

        if len(inputs) != len(self.input_names):
            raise ValueError(f"graph takes {len(self.input_names)} inputs, got {len(inputs)}")
        device = inputs[0].device
        feed = {}
        for name, tensor in zip(self.input_names, inputs, strict=True):
            if name not in self.input_types:
                continue
            array = tensor.detach().cpu().numpy()
            if self.input_types[name] == "tensor(int64)":
                array = array.astype(np.int64)
            elif self.input_types[name] == "tensor(float)":
                array = array.astype(np.float32, copy=False)
            feed[name] = np.ascontiguousarray(array)
        outputs = self.session.run(None, feed)
        return [torch.from_numpy(np.asarray(output)).to(device) for output in outputs]


class OnnxRuntimeGraphs(ExportedGraphs):
    """``RestorationGraphs`` run by ONNX Runtime (see :class:`unildiff.backends.RestorationGraphs`).

    Inputs may live on any device; outputs come back as float32 torch tensors on the device of the
    call's first input.

    Args:
        onnx_dir: ``export/onnx`` with ``lq_encoder.onnx``, ``denoiser.onnx`` and ``decoder.onnx``.
        config: session options (threads, optimisation level, CUDA preference).
    """

    def __init__(self, onnx_dir: Path, config: OnnxRuntimeConfig | None = None) -> None:
        config = config or OnnxRuntimeConfig()
        onnx_dir = Path(onnx_dir)
        manifest = ExportManifest.load(onnx_dir)
        self.pixel_multiple = manifest.pixel_multiple
        self.runners = {
            graph: OnnxSession(onnx_dir / f"{graph.value}.onnx", config, manifest.graphs[graph].input_names)
            for graph in (GraphName.LQ_ENCODER, GraphName.DENOISER, GraphName.DECODER)
        }
        self.providers = self.runners[GraphName.DENOISER].providers
