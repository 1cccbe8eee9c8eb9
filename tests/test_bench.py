"""``unildiff bench`` on a tiny model: a well-formed report (no timing assertions: speed is not tested)."""

from __future__ import annotations

import json

import pytest
import torch

from unildiff.errors import ConfigError
from unildiff.export.bench import run_bench, write_bench
from unildiff.export.config import BenchConfig
from unildiff.export.timing import count_flops, measure


def test_flop_counter_counts_a_matmul():
    left, right = torch.ones(4, 8), torch.ones(8, 16)
    assert count_flops(lambda: left @ right) == 2 * 4 * 8 * 16


def test_measure_returns_the_median_of_the_repeats():
    timing = measure(lambda: None, repeats=3, warmup=0, device="cpu")
    assert len(timing.times_ms) == 3 and timing.median_ms == sorted(timing.times_ms)[1]
    assert timing.peak_memory_bytes > 0


def test_bench_config_names_bad_params():
    with pytest.raises(ConfigError, match="bench.sizes"):
        BenchConfig(sizes=(30,))
    with pytest.raises(ConfigError, match="bench.backends"):
        BenchConfig(backends=("tvm",))
    with pytest.raises(ConfigError, match="bench.device=cuda"):
        BenchConfig(dtype="bf16")


def test_bench_writes_a_well_formed_report(tmp_path):
    from tests.test_export_onnx import tiny_model
    from unildiff.pipeline import SamplingConfig

    config = BenchConfig(
        sizes=(32,), steps=(4,), repeats=2, warmup=0, backends=("torch", "onnxruntime", "tensorrt")
    )
    report = run_bench(
        tiny_model(),
        config,
        SamplingConfig(steps=4, cfg=5.0, start="lq", strength=0.5),  # runs 2 of the 4 steps
        onnx_dir=tmp_path / "missing",
        engine_dir=tmp_path / "engines",
    )
    path = write_bench(report, tmp_path / "reports" / "bench.json")
    loaded = json.loads(path.read_text())
    assert set(loaded["skipped"]) == {"onnxruntime", "tensorrt"}
    assert "export stage" in loaded["skipped"]["onnxruntime"]
    row = loaded["components"]["torch"]["32px"]
    assert set(row) == {"lq_encoder", "denoiser_step_cfg", "decoder"}
    for result in row.values():
        assert result["median_ms"] > 0 and result["flops_per_call"] > 0 and result["peak_memory_mb"] > 0
        assert result["achieved_gflops_per_s"] > 0
    end_to_end = loaded["end_to_end"]["torch"]["32px_4steps"]
    assert end_to_end["graph_calls"] == 1 + 2 + 1 + 1  # encode, 2 denoise steps, decode, prompt encoding
    assert end_to_end["denoiser_calls"] == 2  # FLOPs count the steps that ran, not the schedule's length
    assert 0 <= end_to_end["loop_overhead_percent"] < 100
    assert end_to_end["flops_per_image_graphs"] == (
        row["lq_encoder"]["flops_per_call"]
        + 2 * row["denoiser_step_cfg"]["flops_per_call"]
        + row["decoder"]["flops_per_call"]
    )


def test_sdxl_size_builder_wires_a_model_that_runs():
    """The SDXL-size builder with shrunken configs (the real sizes need a GPU) gives a working model."""
    from unildiff.export.sdxl_size import SDXL_UNET, SDXL_VAE, build_sdxl_size_model
    from unildiff.pipeline import TorchGraphs

    unet = dict(
        SDXL_UNET,
        block_out_channels=(32, 64, 64),
        attention_head_dim=(2, 2, 2),
        transformer_layers_per_block=(1, 1, 1),
        layers_per_block=1,
        norm_num_groups=16,
        cross_attention_dim=64,
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
    )
    vae = dict(SDXL_VAE, block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    model = build_sdxl_size_model(
        unet=unet, vae=vae, text=text, text_2=dict(text, projection_dim=32), max_length=8
    )
    graphs = TorchGraphs.from_model(model)
    encoding = graphs.encode_lq(torch.zeros(1, 3, 32, 32))
    assert encoding.lq_latent.shape == (1, 4, 4, 4)
    assert SDXL_UNET["cross_attention_dim"] == 768 + 1280
