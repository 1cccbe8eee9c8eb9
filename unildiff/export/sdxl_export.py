"""``unildiff export onnx --sdxl-size``: export the SDXL-size restoration graphs, check them, report.

Every graph goes through two Python processes (``python -m unildiff.export.sdxl_export``, a JSON request
on stdin), so no two graphs' weights are ever resident together, the torch weights are gone before ONNX
Runtime loads the graph's, and each phase's time and peak memory (``ru_maxrss``) are its own:

- **export**: build the graph's modules with their seeded random weights
  (:mod:`unildiff.export.sdxl_graphs`); run torch on the input sets (batch 2 at ``image_size``, batch 1
  at ``second_size``) and save inputs and outputs; export with ``torch.onnx.export(dynamo=True)`` (every
  symbolic axis ``Dim.AUTO``); save the graph with its weights in ``<graph>.onnx.data``, without the
  exporter's stack-trace metadata;
- **check**: ``onnx.checker.check_model(path, full_check=True)``, every symbolic axis still dynamic,
  ONNX Runtime (CPU) on every saved input set against torch's outputs; the first set and torch's outputs
  stay as ``samples/<graph>.safetensors`` (for ``polygraphy run --onnxrt`` or any other runtime).

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
from unildiff.export.config import (
    OnnxRuntimeConfig,
    OrtExecutionOrder,
    OrtOptimization,
    TensorRTProfileConfig,
)
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


def _run_graph(graph: GraphName, config: SdxlGraphsConfig, staging: Path) -> dict:
    """Both phases of one graph, each in its own process; the merged result."""
    exported = _run_worker(
        {"graph": graph.value, "config": asdict(config), "staging": str(staging), "phase": "export"}
    )
    request = {"graph": graph.value, "config": asdict(config), "staging": str(staging), "phase": "check"}
    checked = _run_worker({**request, "spec": exported["spec"]})
    return {
        "exporter": "dynamo",
        "dtype": config.dtype(graph),
        "parameters": exported["parameters"],
        **{key: value for key, value in checked.items() if key not in ("seconds", "peak_rss_gib")},
        "seconds": {**exported["seconds"], **checked["seconds"]},
        "peak_rss_gib": {"export": exported["peak_rss_gib"], "check": checked["peak_rss_gib"]},
        "spec": exported["spec"],
    }


def _run_worker(request: dict) -> dict:
    graph = GraphName(request["graph"])
    staging = Path(request["staging"])
    paths = [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}
    completed = subprocess.run(
        [sys.executable, "-m", WORKER_MODULE],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    result_path = staging / f".{graph.value}.{request['phase']}.json"
    if completed.returncode != 0 or not result_path.is_file():
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {completed.returncode}"
        if completed.returncode < 0:
            last = f"killed by signal {-completed.returncode} (out of memory?); {last}"
        raise SdxlExportError(
            f"the SDXL-size {graph.value} graph's {request['phase']} phase failed: {last[:400]}"
        )
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
            result = _run_graph(graph, config, staging)
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


def _sets_path(staging: Path, graph: GraphName) -> Path:
    return staging / f".{graph.value}.sets.safetensors"


def _export_phase(graph_name: GraphName, config: SdxlGraphsConfig, staging: Path) -> dict:
    """Build the graph, run torch on every input set (saved for the check phase), export and save it."""
    import torch
    from safetensors.torch import save_file

    from unildiff.export.sdxl_graphs import build_graph
    from unildiff.export.specs import infer_axes

    seconds = {}
    start = time.perf_counter()
    built = build_graph(graph_name, config)
    seconds["build"] = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        references = [built.module(*inputs) for inputs in built.input_sets]
    seconds["torch"] = time.perf_counter() - start
    tensors = {}
    for index, (inputs, outputs) in enumerate(zip(built.input_sets, references, strict=True)):
        tensors.update({f"{index}.input.{n}": t for n, t in zip(built.input_names, inputs, strict=True)})
        tensors.update({f"{index}.torch.{n}": t for n, t in zip(built.output_names, outputs, strict=True)})
    save_file(
        {name: tensor.contiguous() for name, tensor in tensors.items()}, str(_sets_path(staging, graph_name))
    )

    first = built.input_sets[0]
    side = config.image_size

    def specs(names, values):
        return tuple(
            TensorSpec(n, infer_axes(tuple(t.shape), batch=2, height=side, width=side, spatial=True))
            for n, t in zip(names, values, strict=True)
        )

    spec = GraphSpec(graph_name, specs(built.input_names, first), specs(built.output_names, references[0]))
    auto = torch.export.Dim.AUTO
    per_input = [{index: auto for index in tensor.dynamic_axes()} for tensor in spec.inputs]
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
    _save_graph(program, staging / f"{graph_name.value}.onnx")
    seconds["export"] = time.perf_counter() - start
    return {
        "parameters": built.parameters,
        "seconds": seconds,
        "spec": {
            "inputs": {tensor.name: list(tensor.axes) for tensor in spec.inputs},
            "outputs": {tensor.name: list(tensor.axes) for tensor in spec.outputs},
        },
    }


def check_session_config(dtype: str) -> OnnxRuntimeConfig:
    """The ONNX Runtime (CPU) session the check phase runs a graph of this dtype with.

    fp32 graphs get every graph optimisation. For fp16 / bf16 graphs the CPU provider inserts a cast to
    fp32 in front of every node without a kernel for the type, weights included, so fp32 copies of the
    weights appear next to the graph's own. Constant folding (``all``) makes all of them at session
    creation and keeps them; with the ``default`` node order the weight casts run well ahead of their
    consumers and many copies are alive at once. On the full-size SDXL denoiser (5.1 GB of fp16
    weights): 18.8 GiB peak RSS with optimisations off, the default order, the CPU arena and memory
    patterns; 12.3 GiB without arena and patterns; 11.9 GiB with ``all``. Hence no graph optimisations,
    ``priority_based`` order (each cast runs right before its consumer, its output is freed after it)
    and no arena or memory patterns: 5.85 GiB, of which 5.3 GB are the memory-mapped weights
    (``docs/deployment.md``).
    """
    if dtype == "fp32":
        return OnnxRuntimeConfig(prefer_cuda=False, optimization=OrtOptimization.ALL)
    return OnnxRuntimeConfig(
        prefer_cuda=False,
        optimization=OrtOptimization.DISABLE,
        execution_order=OrtExecutionOrder.PRIORITY_BASED,
        cpu_mem_arena=False,
        mem_pattern=False,
    )


def _check_phase(graph_name: GraphName, config: SdxlGraphsConfig, staging: Path, spec: GraphSpec) -> dict:
    """ONNX's checker on the path, the dynamic axes, and ONNX Runtime (CPU) on every saved input set."""
    import onnx
    from safetensors.torch import load_file, save_file

    from unildiff.backends.onnxruntime import OnnxSession
    from unildiff.export.onnx_export import _check_dynamic
    from unildiff.export.parity import output_difference

    path = staging / f"{graph_name.value}.onnx"
    seconds = {}
    start = time.perf_counter()
    onnx.checker.check_model(str(path), full_check=True)
    _check_dynamic(spec, path)
    seconds["checker"] = time.perf_counter() - start
    graph_inputs = [value.name for value in onnx.load(str(path), load_external_data=False).graph.input]

    saved = load_file(str(_sets_path(staging, graph_name)))
    dtype = config.dtype(graph_name)
    session_config = check_session_config(dtype)
    start = time.perf_counter()
    session = OnnxSession(path, session_config, list(spec.input_names))
    sets, atol = [], GRAPH_ATOL[dtype]
    for index in range(len({key.split(".")[0] for key in saved})):
        inputs = [saved[f"{index}.input.{name}"] for name in spec.input_names]
        reference = [saved[f"{index}.torch.{name}"] for name in spec.output_names]
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
    first = {key[2:]: tensor for key, tensor in saved.items() if key.startswith("0.")}
    save_file(first, str(samples / f"{graph_name.value}.safetensors"))
    _sets_path(staging, graph_name).unlink()
    data = path.with_name(f"{path.name}.data")
    return {
        "onnxruntime_session": {
            "optimization": session_config.optimization.value,
            "execution_order": session_config.execution_order.value,
            "cpu_mem_arena": session_config.cpu_mem_arena,
            "mem_pattern": session_config.mem_pattern,
        },
        "atol_relative": atol,
        "input_sets": sets,
        "within_tolerance": all(item["within_tolerance"] for item in sets),
        "onnx_bytes": path.stat().st_size,
        "external_data_bytes": data.stat().st_size if data.is_file() else 0,
        "seconds": seconds,
        "graph_inputs": graph_inputs,
    }


def _worker(request: dict) -> None:  # pragma: no cover - runs in the child process (tested end to end)
    graph_name = GraphName(request["graph"])
    config = SdxlGraphsConfig(**request["config"])
    staging = Path(request["staging"])
    if request["phase"] == "export":
        result = _export_phase(graph_name, config, staging)
    else:
        result = _check_phase(graph_name, config, staging, _spec_from_json(graph_name, request["spec"]))
    result["peak_rss_gib"] = round(_peak_rss_bytes() / 2**30, 3)
    result["seconds"] = {key: round(value, 2) for key, value in result["seconds"].items()}
    atomic_write_json(staging / f".{graph_name.value}.{request['phase']}.json", result)


if __name__ == "__main__":  # pragma: no cover - the worker process
    _worker(json.loads(sys.stdin.read()))
