"""The TensorRT backend: deserialise the engines and run them on torch CUDA tensors.

Each call sets the input shapes (refusing a shape outside the engine's profile), allocates the outputs
as torch CUDA tensors, binds every tensor with ``set_tensor_address`` and runs
``execute_async_v3`` on the current torch CUDA stream, so no host copy happens between graphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from unildiff.backends.exported import ExportedGraphs
from unildiff.errors import BackendUnavailableError
from unildiff.export.specs import GraphName
from unildiff.export.tensorrt_build import (
    EngineManifest,
    check_shape_in_range,
    cuda_device_identity,
    find_engine_dir,
    import_tensorrt,
)

if TYPE_CHECKING:
    import torch


def _torch_dtype(trt, data_type):
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.bfloat16: torch.bfloat16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.bool: torch.bool,
    }
    if data_type not in table:
        raise BackendUnavailableError(f"TensorRT tensor type {data_type} has no torch equivalent")
    return table[data_type]


class TensorRTEngine:
    """One deserialised engine with its execution context.

    Args:
        runtime: a ``tensorrt.Runtime``.
        trt: the imported ``tensorrt`` module.
        plan_path: the serialized engine.
        graph: which graph it is (for error messages).
        shapes: the profile ranges recorded in the sidecar, ``{input: (min, opt, max)}``.
        call_names: every input name in call order (inputs the exporter pruned are dropped).
    """

    def __init__(self, runtime, trt, plan_path: Path, graph: GraphName, shapes, call_names) -> None:
        self.trt = trt
        self.graph = graph
        self.shapes = shapes
        self.engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise BackendUnavailableError(f"TensorRT could not deserialise {plan_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(index) for index in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.call_names = list(call_names)

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the engine on CUDA tensors given in the graph's input order; returns its outputs in order."""
        import torch

        if len(inputs) != len(self.call_names):
            raise ValueError(f"{self.graph.value} takes {len(self.call_names)} inputs, got {len(inputs)}")
        keep_alive = []
        for name, tensor in zip(self.call_names, inputs, strict=True):
            if name not in self.input_names:
                continue
            check_shape_in_range(self.graph, name, tuple(tensor.shape), self.shapes[name])
            dtype = _torch_dtype(self.trt, self.engine.get_tensor_dtype(name))
            bound = tensor.to(device="cuda", dtype=dtype).contiguous()
            keep_alive.append(bound)
            self.context.set_input_shape(name, tuple(bound.shape))
            self.context.set_tensor_address(name, bound.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(self.trt, self.engine.get_tensor_dtype(name))
            output = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, output.data_ptr())
            outputs.append(output)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendUnavailableError(f"TensorRT execution of {self.graph.value} failed")
        return [output.float() for output in outputs]


class TensorRTGraphs(ExportedGraphs):
    """``RestorationGraphs`` run by TensorRT engines (see :class:`unildiff.backends.RestorationGraphs`).

    Inputs are moved to CUDA; outputs are float32 CUDA tensors.

    Args:
        engine_root: ``export/engines``; the folder for this GPU and TensorRT version is chosen inside.

    Raises:
        BackendUnavailableError: TensorRT or CUDA absent, or the engines were built for another GPU or
            TensorRT version (both named).
        MissingArtifactError: no engines built yet (names the command to run).
    """

    timestep_device = "cuda"

    def __init__(self, engine_root: Path) -> None:
        trt = import_tensorrt()
        gpu_name, _ = cuda_device_identity()
        folder = find_engine_dir(Path(engine_root), gpu_name, trt.__version__)
        manifest = EngineManifest.load(folder)
        manifest.check_compatible(gpu_name, trt.__version__)
        self.device = "cuda"
        self.pixel_multiple = manifest.pixel_multiple
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.runners = {}
        for graph in (GraphName.LQ_ENCODER, GraphName.DENOISER, GraphName.DECODER):
            record = manifest.engines[graph.value]
            self.runners[graph] = TensorRTEngine(
                self.runtime, trt, folder / record.plan, graph, record.shapes, list(record.shapes)
            )
