"""Export the restoration graphs and the text encoders to ONNX.

Graphs (under ``export/onnx/``):

- ``lq_encoder``: LQ image [-1, 1], (B, 3, H, W) → ``lq_features`` (B, C_lq, H/8, W/8), ``lq_latent``
  (scaled, (B, 4, H/8, W/8)) and ``skip_<i>`` (the frozen VAE encoder's multi-scale features). With
  ``daff.lq_scales`` > 1, ``lq_features`` holds every f^LQ scale stacked on the channel axis on the latent
  grid (:mod:`unildiff.models.lq_encoder`): one tensor whose C_lq is ``LQEncoder.out_channels``, so the
  graph names, dynamic axes and TensorRT profiles are those of the single-scale model.
- ``denoiser``: UNet + DAFF, ``(sample, timestep (B,) float32, lq_features, encoder_hidden_states,
  text_embeds, time_ids)`` → ``noise_pred``.
- ``decoder``: DAEM decoder, ``(latents, skip_0, …)`` → ``image`` [-1, 1], (B, 3, H, W). It is exported
  in eval mode, where DAEM evaluates every expert densely with one-hot gates and no routing noise.
- ``text_encoder`` / ``text_encoder_2``: ``input_ids`` (B, L) int64 → penultimate ``hidden_states``
  (and ``text_embeds`` for the second encoder), as SDXL's prompt encoding uses them.

``torch.onnx.export(dynamo=True)`` is tried first; when it fails (data-dependent shape guards in a
model) the TorchScript exporter (``dynamo=False``) is used and the choice is recorded in ``graphs.json``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from unildiff.backends.onnxruntime import OnnxSession
from unildiff.errors import UniLDiffError
from unildiff.export.config import ExportConfig, OnnxRuntimeConfig
from unildiff.export.parity import output_difference
from unildiff.export.specs import GraphName, GraphSpec, TensorSpec, infer_axes

EXTERNAL_DATA_BYTES = 2 * 1024**3
"""Protobuf's 2 GB limit: larger graphs keep their weights in ``<graph>.onnx.data``."""


class ExportError(UniLDiffError):
    """Both ONNX exporters failed for a graph (the message names the graph and the last error)."""


class LQEncoderGraph(nn.Module):
    """``LQConditioner`` with a flat tuple output: (lq_features, lq_latent, *skips)."""

    def __init__(self, conditioner: nn.Module) -> None:
        super().__init__()
        self.conditioner = conditioner

    def forward(self, lq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.conditioner(lq))


class DenoiserGraph(nn.Module):
    """``UniLDiffDenoiser`` with a float32 (B,) timestep, one input per tensor."""

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(
        self, sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids
    ) -> torch.Tensor:
        return self.denoiser(sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids)


class DecoderGraph(nn.Module):
    """``DAEMDecoder`` with the skips as separate inputs; returns only the image [-1, 1]."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, latents: torch.Tensor, *skips: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents, tuple(skips)).sample


class TextEncoderGraph(nn.Module):
    """A CLIP text encoder → penultimate hidden states (and the projected ``text_embeds`` if it has one)."""

    def __init__(self, text_encoder: nn.Module, with_projection: bool) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.with_projection = with_projection

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.text_encoder(input_ids, output_hidden_states=True)
        if self.with_projection:
            return output.hidden_states[-2], output.text_embeds
        return (output.hidden_states[-2],)


@dataclass(frozen=True)
class GraphExport:
    """What to export: the wrapper module, example inputs and the IO names."""

    name: GraphName
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    spatial: bool = True
    other_inputs: tuple[tuple[torch.Tensor, ...], ...] = ()
    """Further input sets (another batch or image size) every exported graph must also reproduce."""

    def reference(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The torch outputs on ``inputs`` (always a tuple)."""
        with torch.no_grad():
            outputs = self.module(*inputs)
        return outputs if isinstance(outputs, tuple) else (outputs,)

    def spec(self, batch: int, height: int, width: int) -> GraphSpec:
        """Name the axes from the example inputs and the module's outputs on them."""
        outputs = self.reference(self.inputs)

        def tensor_specs(names, tensors):
            return tuple(
                TensorSpec(
                    n,
                    infer_axes(tuple(t.shape), batch=batch, height=height, width=width, spatial=self.spatial),
                )
                for n, t in zip(names, tensors, strict=True)
            )

        return GraphSpec(
            self.name, tensor_specs(self.input_names, self.inputs), tensor_specs(self.output_names, outputs)
        )


def _weights_bytes(model: onnx.ModelProto) -> int:
    return sum(len(tensor.raw_data) for tensor in model.graph.initializer)


STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
"""Node metadata the dynamo exporter fills with Python stack traces (absolute source paths)."""


def _drop_stack_traces(nodes) -> None:
    """Remove :data:`STACK_TRACE_KEY` from ``nodes`` and their subgraphs, so the saved bytes do not
    depend on where the checkout and the virtual environment live (DVC hashes them)."""
    for node in nodes:
        kept = [entry for entry in node.metadata_props if entry.key != STACK_TRACE_KEY]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
        for attribute in node.attribute:
            for subgraph in (attribute.g, *attribute.graphs):
                _drop_stack_traces(subgraph.node)


def _save(model: onnx.ModelProto, path: Path) -> None:
    """Save ``model`` without stack traces; weights go to ``<name>.onnx.data`` when they exceed 2 GB."""
    _drop_stack_traces(model.graph.node)
    for function in model.functions:
        _drop_stack_traces(function.node)
    external = _weights_bytes(model) > EXTERNAL_DATA_BYTES
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data" if external else None,
    )


def _dynamic_shapes(graph: GraphExport, spec: GraphSpec) -> dict:
    """``dynamic_shapes`` for torch.export, keyed by the forward's parameter names (``*skips`` included).

    Every symbolic axis is ``Dim.AUTO``: torch.export works out how the axes relate (a skip is twice the
    size of the next one) instead of us spelling it out.
    """
    auto = torch.export.Dim.AUTO
    per_input = iter([{index: auto for index in tensor.dynamic_axes()} for tensor in spec.inputs])
    bound = inspect.signature(graph.module.forward).bind(*graph.inputs)
    shapes = {}
    for name, value in bound.arguments.items():
        shapes[name] = tuple(next(per_input) for _ in value) if isinstance(value, tuple) else next(per_input)
    return shapes


def _export_dynamo(graph: GraphExport, spec: GraphSpec, path: Path, opset: int) -> None:
    program = torch.onnx.export(
        graph.module,
        graph.inputs,
        dynamo=True,
        input_names=list(graph.input_names),
        output_names=list(graph.output_names),
        dynamic_shapes=_dynamic_shapes(graph, spec),
        opset_version=opset,
        optimize=True,
        verbose=False,
    )
    _save(program.model_proto, path)


def _export_torchscript(graph: GraphExport, spec: GraphSpec, path: Path, opset: int) -> None:
    dynamic_axes = {tensor.name: tensor.dynamic_axes() for tensor in spec.inputs + spec.outputs}
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        scratch_path = Path(scratch) / path.name
        torch.onnx.export(
            graph.module,
            graph.inputs,
            str(scratch_path),
            dynamo=False,
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )
        _save(onnx.load(str(scratch_path)), path)


def _check_dynamic(spec: GraphSpec, path: Path) -> None:
    """Raise when an axis the spec calls dynamic was fixed by the exporter."""
    model = onnx.load(str(path), load_external_data=False)
    exported = {value.name: value for value in model.graph.input}
    for tensor in spec.inputs:
        if tensor.name not in exported:  # an input the graph does not use is pruned
            continue
        dims = exported[tensor.name].type.tensor_type.shape.dim
        for index in tensor.dynamic_axes():
            if not dims[index].dim_param:
                raise ValueError(
                    f"input {tensor.name} axis {index} was exported static ({dims[index].dim_value})"
                )


def _check_outputs(graph: GraphExport, path: Path, atol: float) -> None:
    """Run the graph with ONNX Runtime on every input set; raise when it departs from torch."""
    session = OnnxSession(path, OnnxRuntimeConfig(prefer_cuda=False), graph.input_names)
    for inputs in (graph.inputs, *graph.other_inputs):
        difference = output_difference(graph.reference(inputs), session(*inputs))
        if not difference.within(atol):
            shape = "x".join(map(str, inputs[0].shape))
            raise ValueError(
                f"ONNX Runtime output differs from torch by {difference.max_abs:.3g} at input {shape}"
            )


def export_graph(graph: GraphExport, spec: GraphSpec, path: Path, config: ExportConfig) -> str:
    """Export one graph to ``path`` and check it with the ONNX checker.

    Returns:
        ``"dynamo"`` or ``"torchscript"``: the exporter that produced the graph.

    Raises:
        ExportError: when every exporter failed (names the graph and the last error).
    """
    graph.module.eval()
    exporters = [("dynamo", _export_dynamo), ("torchscript", _export_torchscript)]
    if not config.prefer_dynamo:
        exporters.reverse()
    errors = []
    for exporter_name, exporter in exporters:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                warnings.simplefilter("ignore")
                logging.getLogger("torch.onnx").setLevel(logging.ERROR)
                exporter(graph, spec, path, config.opset)
            onnx.checker.check_model(str(path), full_check=True)
            _check_dynamic(spec, path)
            _check_outputs(graph, path, config.graph_atol)
            return exporter_name
        except Exception as error:  # exporters raise many unrelated types; we try the next one
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            errors.append(f"{exporter_name}: {message[:300]}")
    raise ExportError(f"could not export {graph.name.value} to ONNX ({'; '.join(errors)})")


def _token_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    tokens = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return tokens.input_ids


def restoration_exports(
    graphs, prior, lq: torch.Tensor, prompts: list[str], second_size: int
) -> list[GraphExport]:
    """The five graphs with example inputs computed by the torch modules.

    Args:
        graphs: ``unildiff.backends.torch.TorchGraphs`` (conditioner, denoiser, DAEM decoder).
        prior: the ``PriorComponents`` holding the text encoders and tokenizers.
        lq: two LQ images, [-1, 1], (2, 3, H, W), H and W multiples of ``graphs.pixel_multiple``.
        prompts: two prompts, one per image.
        second_size: a second square side (pixels) each graph must also reproduce, at batch 1.
    """
    from unildiff.models.text import encode_prompt, make_time_ids

    if graphs.decoder is None:
        raise ValueError("export needs the DAEM decoder (TorchGraphs built with plain_decoder=False)")
    generator = torch.Generator().manual_seed(0)

    def example_set(images: torch.Tensor, texts: list[str]):
        batch, _, height, width = images.shape
        lq_features, lq_latent, *skips = graphs.conditioner(images)
        embeds, pooled = encode_prompt(prior, texts)
        sample = torch.randn(lq_latent.shape, generator=generator)
        timestep = torch.full((batch,), 499.0)
        denoise = (sample, timestep, lq_features, embeds, pooled, make_time_ids(height, width, batch))
        return (
            (images,),
            denoise,
            (lq_latent, *skips),
            (_token_ids(prior.tokenizer, texts),),
            (_token_ids(prior.tokenizer_2, texts),),
        )

    with torch.no_grad():
        first = example_set(lq, prompts)
        top = (lq.shape[-2] - second_size) // 2
        left = (lq.shape[-1] - second_size) // 2
        crop = lq[:1, :, top : top + second_size, left : left + second_size]
        second = example_set(crop, prompts[:1])
    skip_names = tuple(f"skip_{index}" for index in range(len(first[2]) - 1))
    modules = (
        (
            GraphName.LQ_ENCODER,
            LQEncoderGraph(graphs.conditioner),
            ("lq",),
            ("lq_features", "lq_latent", *skip_names),
        ),
        (
            GraphName.DENOISER,
            DenoiserGraph(graphs.denoiser),
            ("sample", "timestep", "lq_features", "encoder_hidden_states", "text_embeds", "time_ids"),
            ("noise_pred",),
        ),
        (GraphName.DECODER, DecoderGraph(graphs.decoder), ("latents", *skip_names), ("image",)),
        (
            GraphName.TEXT_ENCODER,
            TextEncoderGraph(prior.text_encoder, False),
            ("input_ids",),
            ("hidden_states",),
        ),
        (
            GraphName.TEXT_ENCODER_2,
            TextEncoderGraph(prior.text_encoder_2, True),
            ("input_ids",),
            ("hidden_states", "text_embeds"),
        ),
    )
    exports = []
    for index, (name, module, input_names, output_names) in enumerate(modules):
        spatial = index < 3
        exports.append(
            GraphExport(
                name, module.eval(), first[index], input_names, output_names, spatial, (second[index],)
            )
        )
    return exports


def export_model(graphs, prior, lq: torch.Tensor, prompts: list[str], out_dir: Path, config: ExportConfig):
    """Export every graph into ``out_dir`` (replaced atomically) with ``graphs.json``.

    Args:
        graphs: ``TorchGraphs`` of the trained model (eval mode: DAEM dense, one-hot gates, no noise).
        prior: ``PriorComponents`` (text encoders and tokenizers).
        lq: two LQ images, [-1, 1], (2, 3, H, W).
        prompts: their prompts.
        out_dir: ``export/onnx``.
        config: export settings.

    Returns:
        The :class:`~unildiff.export.specs.ExportManifest` written to ``out_dir/graphs.json``.
    """
    from rich.progress import Progress

    from unildiff.export.specs import ExportManifest
    from unildiff.utils.atomic import atomic_dir

    batch, _, height, width = lq.shape
    exports = restoration_exports(graphs, prior, lq, prompts, config.dynamic_check_size)
    specs, exporters = {}, {}
    with atomic_dir(out_dir) as staging, Progress() as progress:
        task = progress.add_task("exporting ONNX graphs", total=len(exports))
        for graph in exports:
            specs[graph.name] = graph.spec(batch, height, width)
            exporters[graph.name] = export_graph(
                graph, specs[graph.name], staging / f"{graph.name.value}.onnx", config
            )
            progress.advance(task)
        manifest = ExportManifest(specs, exporters, int(graphs.pixel_multiple), config.opset)
        manifest.save(staging)
    return manifest
