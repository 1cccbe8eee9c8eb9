"""``unildiff export onnx --sdxl-size``: export the SDXL-size restoration graphs, check them, report.

Every graph is exported in its own Python process (``python -m unildiff.export.sdxl_export``, a JSON
request on stdin), so the three graphs' weights are never resident together and each graph's time and
peak memory are its own (``ru_maxrss`` of that process). A worker:

1. builds the graph's modules with their seeded random weights (:mod:`unildiff.export.sdxl_graphs`);
2. runs torch on the input sets (batch 2 at ``image_size``, batch 1 at ``second_size``);
3. exports with ``torch.onnx.export(dynamo=True)`` (every symbolic axis ``Dim.AUTO``) and saves the graph
   with its weights in ``<graph>.onnx.data``, without the exporter's stack-trace metadata;
4. drops the torch modules, runs ``onnx.checker.check_model(path, full_check=True)``, checks that every
   symbolic axis stayed dynamic, and runs ONNX Runtime (CPU) on both input sets;
5. writes the input and the torch outputs of the first set to ``samples/<graph>.safetensors`` (for
   ``polygraphy run --onnxrt`` or any other runtime to compare against).

The parent writes ``graphs.json`` (the same manifest as the ``export`` stage), ``tensorrt_profiles.json``
(the min/opt/max shape of every graph input that TensorRT builds with, the denoiser's batch doubled
for CFG) and the parity report, then moves the staging folder into place.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from unildiff.errors import UniLDiffError
from unildiff.export.config import TensorRTProfileConfig
from unildiff.export.sdxl_graphs import SdxlGraphsConfig
from unildiff.export.specs import RESTORATION_GRAPHS, ExportManifest, GraphName, GraphSpec, TensorSpec
from unildiff.utils.atomic import atomic_dir, atomic_write_json

WORKER_MODULE = "unildiff.export.sdxl_export"
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
PROFILES_FILENAME = "tensorrt_profiles.json"
SAMPLES_DIR = "samples"
GRAPH_ATOL = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 1e-1}
"""Max |ONNX Runtime − torch| per graph, relative to max(1, max |torch output|), by the graph's dtype.

fp32 is the ``export`` stage's default. In fp16 / bf16 both runtimes round every intermediate to 11 / 8
significant bits in their own order (ONNX Runtime fuses and reorders differently from torch), so the two
differ by roughly the format's epsilon (9.8e-4 / 7.8e-3) times the depth's error growth; the bounds are
about 10× what the reduced-width graphs show (``docs/deployment.md``)."""


class SdxlExportError(UniLDiffError):
    """A worker failed (the message names the graph and its last error line)."""


def _request(graph: GraphName, config: SdxlGraphsConfig, staging: Path) -> str:
    return json.dumps({"graph": graph.value, "config": asdict(config), "staging": str(staging)})


def _run_worker(graph: GraphName, config: SdxlGraphsConfig, staging: Path) -> dict:
    paths = [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}
    completed = subprocess.run(
        [sys.executable, "-m", WORKER_MODULE],
        input=_request(graph, config, staging),
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    result_path = staging / f".{graph.value}.result.json"
    if completed.returncode != 0 or not result_path.is_file():
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {completed.returncode}"
        if completed.returncode < 0:
            last = f"killed by signal {-completed.returncode} (out of memory?); {last}"
        raise SdxlExportError(f"exporting the SDXL-size {graph.value} graph failed: {last[:400]}")
    result = json.loads(result_path.read_text())
    result_path.unlink()
    return result


def _spec_from_json(graph: GraphName, payload: dict) -> GraphSpec:
    return GraphSpec(
        graph,
        tuple(TensorSpec(name, tuple(axes)) for name, axes in payload["inputs"].items()),
        tuple(TensorSpec(name, tuple(axes)) for name, axes in payload["outputs"].items()),
    )


def tensorrt_profiles(
    specs: dict[GraphName, GraphSpec],
    graph_inputs: dict[GraphName, list[str]],
    dtypes: dict[GraphName, str],
    profile: TensorRTProfileConfig,
) -> dict:
    """The TensorRT optimisation profile of every graph, as ``build_engines`` derives it.

    Only the inputs each ONNX graph really has are listed (the exporter prunes unused ones).
    """
    from unildiff.export.tensorrt_build import profile_shapes

    graphs = {}
    for graph, spec in specs.items():
        shapes = profile_shapes(spec, profile)
        graphs[graph.value] = {
            "dtype": dtypes[graph],
            "inputs": {
                name: dict(zip(("min", "opt", "max"), (list(shape) for shape in shapes[name]), strict=True))
                for name in graph_inputs[graph]
            },
        }
    return {"profile": asdict(profile), "graphs": graphs}


def export_sdxl_size(
    out_dir: Path, parity_path: Path, config: SdxlGraphsConfig, profile: TensorRTProfileConfig, progress=None
) -> dict:
    """Export lq_encoder, denoiser and decoder at SDXL's size into ``out_dir`` (replaced atomically).

    Args:
        out_dir: folder of the graphs (``<graph>.onnx`` + ``.onnx.data``, ``graphs.json``,
            ``tensorrt_profiles.json``, ``samples/``).
        parity_path: the JSON report (atomic): per graph the exporter, dtype, parameters, max/mean
            |ONNX Runtime − torch| per input set, the tolerance and the verdict, seconds and peak RSS.
        config: sizes and dtypes.
        profile: the TensorRT profile to derive per graph.
        progress: ``callback(graph_name)`` called before each graph (progress bars).

    Returns:
        The report. It is written even when a graph departs from torch (``all_within_tolerance`` false).

    Raises:
        SdxlExportError: a worker failed (graph named, last error line).
    """
    results, specs, inputs = {}, {}, {}
    with atomic_dir(out_dir) as staging:
        for graph in RESTORATION_GRAPHS:
            if progress is not None:
                progress(graph.value)
            result = _run_worker(graph, config, staging)
            specs[graph] = _spec_from_json(graph, result.pop("spec"))
            inputs[graph] = result.pop("graph_inputs")
            results[graph.value] = result
        from unildiff.export.sdxl_graphs import pixel_multiple

        exporters = {graph: "dynamo" for graph in specs}
        ExportManifest(specs, exporters, pixel_multiple(config), config.opset).save(staging)
        dtypes = {graph: config.dtype(graph) for graph in specs}
        atomic_write_json(staging / PROFILES_FILENAME, tensorrt_profiles(specs, inputs, dtypes, profile))
    report = {
        "config": asdict(config),
        "graphs": results,
        "all_within_tolerance": all(result["within_tolerance"] for result in results.values()),
        "tolerance_rule": "max |onnxruntime - torch| <= atol * max(1, max |torch|), atol by dtype",
        "onnx_dir": str(out_dir),
    }
    atomic_write_json(parity_path, report)
    return report


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _save_graph(program, path: Path) -> None:
    """Save an ``ONNXProgram`` with external data, without the exporter's stack traces (absolute paths)."""
    import onnx_ir as ir

    from unildiff.export.onnx_export import STACK_TRACE_KEY

    graphs = [program.model.graph, *program.model.functions.values()]
    for graph in graphs:
        for node in ir.traversal.RecursiveGraphIterator(graph):
            node.metadata_props.pop(STACK_TRACE_KEY, None)
    ir.save(program.model, str(path), external_data=f"{path.name}.data")


def _worker(request: dict) -> None:  # pragma: no cover - runs in the child process (tested end to end)
    import gc

    import onnx
    import torch
    from safetensors.torch import save_file

    from unildiff.backends.onnxruntime import OnnxSession
    from unildiff.export.config import OnnxRuntimeConfig
    from unildiff.export.onnx_export import _check_dynamic
    from unildiff.export.parity import output_difference
    from unildiff.export.sdxl_graphs import build_graph
    from unildiff.export.specs import infer_axes

    graph_name = GraphName(request["graph"])
    config = SdxlGraphsConfig(**request["config"])
    staging = Path(request["staging"])
    seconds = {}
    start = time.perf_counter()
    built = build_graph(graph_name, config)
    seconds["build"] = time.perf_counter() - start

    start = time.perf_counter()
    with torch.no_grad():
        references = [built.module(*inputs) for inputs in built.input_sets]
    seconds["torch"] = time.perf_counter() - start

    first = built.input_sets[0]
    batch, height, width = 2, config.image_size, config.image_size

    def specs(names, tensors):
        return tuple(
            TensorSpec(n, infer_axes(tuple(t.shape), batch=batch, height=height, width=width, spatial=True))
            for n, t in zip(names, tensors, strict=True)
        )

    spec = GraphSpec(graph_name, specs(built.input_names, first), specs(built.output_names, references[0]))
    auto = torch.export.Dim.AUTO
    per_input = [{index: auto for index in tensor.dynamic_axes()} for tensor in spec.inputs]
    path = staging / f"{graph_name.value}.onnx"
    start = time.perf_counter()
    program = torch.onnx.export(
        built.module,
        first,
        dynamo=True,
        input_names=list(built.input_names),
        output_names=list(built.output_names),
        dynamic_shapes=(tuple(per_input),),
        opset_version=config.opset,
        optimize=True,
        verbose=False,
    )
    _save_graph(program, path)
    seconds["export"] = time.perf_counter() - start
    input_sets, parameters = built.input_sets, built.parameters
    del program, built  # the torch weights go before ONNX Runtime loads the graph's
    gc.collect()

    start = time.perf_counter()
    onnx.checker.check_model(str(path), full_check=True)
    _check_dynamic(spec, path)
    seconds["checker"] = time.perf_counter() - start
    graph_inputs = [value.name for value in onnx.load(str(path), load_external_data=False).graph.input]

    start = time.perf_counter()
    session = OnnxSession(path, OnnxRuntimeConfig(prefer_cuda=False), [tensor.name for tensor in spec.inputs])
    sets = []
    atol = GRAPH_ATOL[config.dtype(graph_name)]
    for inputs, reference in zip(input_sets, references, strict=True):
        difference = output_difference(reference, session(*inputs))
        sets.append(
            {
                "input_shape": list(inputs[0].shape),
                "max_abs_diff": difference.max_abs,
                "mean_abs_diff": difference.mean_abs,
                "max_abs_torch_output": difference.scale,
                "within_tolerance": difference.within(atol),
            }
        )
    seconds["onnxruntime"] = time.perf_counter() - start

    samples = staging / SAMPLES_DIR
    samples.mkdir(exist_ok=True)
    tensors = {f"input.{name}": tensor for name, tensor in zip(spec.input_names, first, strict=True)}
    tensors.update({f"torch.{name}": t for name, t in zip(spec.output_names, references[0], strict=True)})
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    save_file(tensors, str(samples / f"{graph_name.value}.safetensors"))

    data = path.with_name(f"{path.name}.data")
    result = {
        "exporter": "dynamo",
        "dtype": config.dtype(graph_name),
        "parameters": parameters,
        "atol_relative": atol,
        "input_sets": sets,
        "within_tolerance": all(item["within_tolerance"] for item in sets),
        "onnx_bytes": path.stat().st_size,
        "external_data_bytes": data.stat().st_size if data.is_file() else 0,
        "seconds": {key: round(value, 2) for key, value in seconds.items()},
        "peak_rss_gib": round(_peak_rss_bytes() / 2**30, 3),
        "graph_inputs": graph_inputs,
        "spec": {
            "inputs": {tensor.name: list(tensor.axes) for tensor in spec.inputs},
            "outputs": {tensor.name: list(tensor.axes) for tensor in spec.outputs},
        },
    }
    atomic_write_json(staging / f".{graph_name.value}.result.json", result)


if __name__ == "__main__":  # pragma: no cover - the worker process
    _worker(json.loads(sys.stdin.read()))
