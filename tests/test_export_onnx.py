"""ONNX export of a fresh tiny UniLDiff: checker, ONNX-Runtime parity, dynamic sizes, ORT pipeline.

The export runs once per module (about two minutes on 2 CPU cores). Zero-initialised parameters (DAFF's
output projection, DAEM's scales) are filled with small random values first, so the graphs compute
something non-trivial and parity means something.
"""

from __future__ import annotations

import functools
from pathlib import Path

import onnx
import pytest
import torch

from unildiff.backends.onnxruntime import OnnxRuntimeGraphs, OnnxSession
from unildiff.export.config import ExportConfig, OnnxRuntimeConfig
from unildiff.export.onnx_export import export_model
from unildiff.export.parity import output_difference, psnr
from unildiff.export.specs import ExportManifest, GraphName

GRAPH_ATOL = 1e-4
"""Max abs ONNX-Runtime-vs-torch difference allowed per graph, relative to max(1, max |torch output|)."""
PIPELINE_PSNR = 40.0
"""Lowest PSNR (dB) between the ORT pipeline's restoration and torch's on the same seed."""
REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout; no saved graph may mention it."""


def tiny_model():
    """A fresh tiny UniLDiff (random prior) whose zero-initialised parameters are made non-zero."""
    from unildiff.models.bundle import build_model
    from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
    from unildiff.models.prior import build_tiny_prior

    torch.manual_seed(0)
    model = build_model(build_tiny_prior(PriorConfig(), seed=0), DAFFConfig(), DAEMConfig())
    generator = torch.Generator().manual_seed(1)
    for module in (model.daff, model.decoder):
        for parameter in module.parameters():
            if not parameter.detach().any():
                parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    for module in (model.lq_encoder, model.daff, model.unet, model.decoder, model.prior.vae):
        module.eval()
    return model


def synthetic_lq(size: int = 64) -> torch.Tensor:
    """Two smooth synthetic LQ images, [-1, 1], (2, 3, size, size)."""
    generator = torch.Generator().manual_seed(2)
    coarse = torch.rand(2, 3, size // 8, size // 8, generator=generator)
    return (torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") * 2 - 1).clamp(-1, 1)


def exported_tiny(folder):
    """Export a tiny model into ``folder/onnx``; returns (onnx_dir, model, torch graphs, lq)."""
    from unildiff.backends.torch import TorchGraphs

    model = tiny_model()
    graphs = TorchGraphs.from_model(model)
    lq = synthetic_lq()
    # TorchScript first: the denoiser falls back to dynamo (the TorchScript exporter cannot map the
    # aten::rms_norm of diffusers' FluxAttention in DAFF at opset 18; docs/testing.md), so one export
    # covers both exporters, in about 60 % of the time of dynamo for every graph
    # (tests/test_models_export.py traces the decoder with dynamo too).
    config = ExportConfig(dynamic_check_size=32, graph_atol=GRAPH_ATOL, prefer_dynamo=False)
    export_model(graphs, model.prior, lq, ["remove noise", "remove rain"], folder / "onnx", config)
    return folder / "onnx", model, graphs, lq


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return exported_tiny(tmp_path_factory.mktemp("export"))


def test_every_graph_is_written_checked_and_dynamic(exported):
    onnx_dir, *_ = exported
    manifest = ExportManifest.load(onnx_dir)
    assert set(manifest.graphs) == set(GraphName)
    assert manifest.pixel_multiple == 8 and manifest.opset >= 17  # tiny: 4 (VAE) x 2 (UNet) x 1 (patch)
    for name in GraphName:
        path = onnx_dir / f"{name.value}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        assert max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) >= 17
        first_input = model.graph.input[0].type.tensor_type.shape.dim
        assert first_input[0].dim_param, f"{name.value}: batch axis is static"
        assert manifest.exporters[name] in ("dynamo", "torchscript")
    assert manifest.exporters[GraphName.DENOISER] == "dynamo"  # the fallback ran and passed every check
    assert manifest.exporters[GraphName.DECODER] == "torchscript"


def test_saved_graphs_hold_no_source_paths(exported):
    """The dynamo exporter's per-node stack traces name absolute paths; they are dropped on save, so a
    clone elsewhere writes the same bytes (DVC hashes export/onnx)."""
    onnx_dir, *_ = exported
    for name in GraphName:
        model = onnx.load(str(onnx_dir / f"{name.value}.onnx"), load_external_data=False)
        keys = {entry.key for node in model.graph.node for entry in node.metadata_props}
        assert "pkg.torch.onnx.stack_trace" not in keys, name.value
        assert str(REPO_ROOT) not in str(model.graph), name.value


@pytest.mark.parametrize("size", [64, 48])
def test_graphs_match_torch_at_two_sizes(exported, size):
    """Two sizes (and batch 1) through the same graphs, against torch."""
    onnx_dir, model, graphs, lq = exported
    image = torch.nn.functional.interpolate(lq[:1], size=(size, size), mode="bilinear")
    ort = OnnxRuntimeGraphs(onnx_dir)
    expected, actual = graphs.encode_lq(image), ort.encode_lq(image)
    latent_size = size // 2 ** (len(model.prior.vae.config.block_out_channels) - 1)
    assert actual.lq_features.shape[-2:] == (latent_size, latent_size)
    encoder = output_difference(
        (expected.lq_features, expected.lq_latent, *expected.skips),
        (actual.lq_features, actual.lq_latent, *actual.skips),
    )
    assert encoder.within(GRAPH_ATOL), encoder
    from unildiff.models.text import encode_prompt, make_time_ids

    embeds, pooled = encode_prompt(model.prior, ["", "remove noise"])
    channels = model.unet.config.in_channels
    latent = torch.randn(2, channels, latent_size, latent_size, generator=torch.Generator().manual_seed(3))
    arguments = (
        latent,
        torch.full((2,), 333.0),
        expected.lq_features.repeat(2, 1, 1, 1),
        embeds,
        pooled,
        make_time_ids(size, size, 2),
    )
    denoiser = output_difference([graphs.denoise(*arguments)], [ort.denoise(*arguments)])
    assert denoiser.within(GRAPH_ATOL) and denoiser.scale > 0.1, denoiser
    decoder = output_difference(
        [graphs.decode(expected.lq_latent, expected.skips)], [ort.decode(expected.lq_latent, expected.skips)]
    )
    assert decoder.within(GRAPH_ATOL), decoder


def test_text_encoders_match_torch(exported):
    onnx_dir, model, _, _ = exported
    prior = model.prior
    ids = prior.tokenizer(
        ["remove haze", "x"],
        padding="max_length",
        max_length=prior.tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    session = OnnxSession(onnx_dir / "text_encoder_2.onnx", OnnxRuntimeConfig())
    with torch.no_grad():
        output = prior.text_encoder_2(ids, output_hidden_states=True)
    difference = output_difference((output.hidden_states[-2], output.text_embeds), session(ids))
    assert difference.within(GRAPH_ATOL), difference


def test_ort_pipeline_restores_like_torch(exported):
    from unildiff.models.text import encode_prompt
    from unildiff.pipeline import RestorationPipeline, SamplingConfig, make_scheduler
    from unildiff.start import StartConfig

    onnx_dir, model, graphs, lq = exported
    config = SamplingConfig(steps=3, cfg=5.0)
    results = []
    for backend_graphs in (graphs, OnnxRuntimeGraphs(onnx_dir)):
        pipeline = RestorationPipeline(
            backend_graphs,
            functools.partial(encode_prompt, model.prior),
            make_scheduler(config.scheduler, model.prior.scheduler.config),
            config,
            StartConfig(mode="lq", timestep=999, noise=1.0),  # SDEdit from the LQ latent, every step
        )
        results.append(pipeline(lq[:1], "remove noise", torch.Generator().manual_seed(0)))
    assert results[0].shape == (1, 3, 64, 64)
    assert psnr(results[1], results[0]) > PIPELINE_PSNR
    assert psnr(results[1], lq[:1]) < 80.0  # it did restore something, not pass the input through


def test_bench_times_onnxruntime_against_torch(exported, tmp_path):
    from unildiff.bench.config import BenchConfig
    from unildiff.bench.run import run_bench
    from unildiff.pipeline_unildiff import pipeline_from_model

    onnx_dir, model, _, _ = exported
    config = BenchConfig(sizes=(32,), steps=(2,), repeats=1, warmup=0, backends=("torch", "onnxruntime"))
    report = run_bench(pipeline_from_model(model), config, onnx_dir=onnx_dir, engine_dir=tmp_path)
    assert report["skipped"] == {}
    torch_row = report["components"]["torch"]["32px"]["denoiser_step_cfg"]
    ort_row = report["components"]["onnxruntime"]["32px"]["denoiser_step_cfg"]
    assert ort_row["flops_per_call"] == torch_row["flops_per_call"] > 0
    assert report["speedup_vs_torch"]["onnxruntime"]["32px_2steps"] > 0


def test_multi_scale_lq_graphs_match_torch(tmp_path):
    """``daff.lq_scales: 3``: the LQ encoder graph returns the stacked scales and the denoiser graph takes
    them (one ``lq_features`` input, 32 + 128 + 512 channels at the tiny sizes); ONNX Runtime matches
    torch at the export size, the dynamic-check size (both inside ``export_graph``) and a third size."""
    from unildiff.backends.torch import TorchGraphs
    from unildiff.export.onnx_export import export_graph, restoration_exports
    from unildiff.models.bundle import build_model
    from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
    from unildiff.models.prior import build_tiny_prior
    from unildiff.models.text import encode_prompt, make_time_ids

    torch.manual_seed(0)
    daff_config = DAFFConfig(width=16, num_heads=2, normalize_lq=True, lq_residual=True, lq_scales=3)
    model = build_model(build_tiny_prior(PriorConfig(), seed=0), daff_config, DAEMConfig(num_experts=2))
    generator = torch.Generator().manual_seed(1)
    for parameter in model.daff.parameters():  # proj_out and the finer scales' embeddings start at zero
        if not parameter.detach().any():
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    graphs = TorchGraphs.from_model(model)
    for module in (model.lq_encoder, model.daff, model.unet, model.decoder, model.prior.vae):
        module.eval()
    lq = synthetic_lq(32)
    exports = restoration_exports(graphs, model.prior, lq, ["remove noise", "remove rain"], 16)
    config = ExportConfig(dynamic_check_size=16, graph_atol=GRAPH_ATOL, prefer_dynamo=True)
    sessions = {}
    for graph in exports[:2]:  # the LQ encoder and the denoiser
        spec = graph.spec(2, 32, 32)
        path = tmp_path / f"{graph.name.value}.onnx"
        export_graph(graph, spec, path, config)  # raises when ONNX Runtime departs from torch
        tensors = {tensor.name: tensor for tensor in spec.inputs + spec.outputs}
        assert tensors["lq_features"].axes == ("batch", 672, "height/4", "width/4"), graph.name
        sessions[graph.name] = OnnxSession(path, OnnxRuntimeConfig(prefer_cuda=False), graph.input_names)
    image = synthetic_lq(24)[:1]
    with torch.no_grad():
        expected = graphs.conditioner(image)
    actual = sessions[GraphName.LQ_ENCODER](image)
    assert actual[0].shape == (1, 672, 6, 6)
    encoder = output_difference(expected, actual)
    assert encoder.within(GRAPH_ATOL), encoder
    embeds, pooled = encode_prompt(model.prior, ["remove noise"])
    latent = torch.randn(1, model.unet.config.in_channels, 6, 6, generator=torch.Generator().manual_seed(3))
    arguments = (latent, torch.full((1,), 333.0), expected[0], embeds, pooled, make_time_ids(24, 24, 1))
    with torch.no_grad():
        reference = graphs.denoise(*arguments)
        shuffled = graphs.denoise(latent, arguments[1], expected[0].flip(-1), *arguments[3:])
    assert (reference - shuffled).abs().max() > 1e-4  # the output depends on f^LQ
    denoiser = output_difference([reference], sessions[GraphName.DENOISER](*arguments))
    assert denoiser.within(GRAPH_ATOL) and denoiser.scale > 0.1, denoiser
