"""``unildiff bench`` on a tiny model: a well-formed report (no timing assertions: speed is not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unildiff.bench.config import BenchConfig, bench_config_from_dict, config_description
from unildiff.bench.isolated import merge_reports, run_bench_isolated
from unildiff.bench.run import PhotoBench, run_bench, write_bench
from unildiff.bench.timing import count_flops, measure
from unildiff.errors import BackendUnavailableError, ConfigError, MissingArtifactError
from unildiff.export.config import OnnxRuntimeConfig
from unildiff.tiling import tile_grid


def test_flop_counter_counts_a_matmul():
    left, right = torch.ones(4, 8), torch.ones(8, 16)
    assert count_flops(lambda: left @ right) == 2 * 4 * 8 * 16


def test_flop_counter_counts_cpu_attention():
    """F.scaled_dot_product_attention on CPU counts QK^T and PV, like the explicit matmuls do."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 4, 64, 16, generator=generator)
    key = torch.randn(2, 4, 48, 16, generator=generator)
    value = torch.randn(2, 4, 48, 16, generator=generator)
    fused = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(query, key, value))
    explicit = count_flops(lambda: (query @ key.transpose(-1, -2)).softmax(-1) @ value)
    assert fused == explicit == 2 * (2 * 2 * 4 * 64 * 48 * 16)


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
    with pytest.raises(ConfigError, match="bench.rounds"):
        BenchConfig(rounds=0)


def test_bench_writes_a_well_formed_report(tmp_path):
    from tests.test_export_onnx import tiny_model
    from unildiff.pipeline import SamplingConfig
    from unildiff.pipeline_unildiff import pipeline_from_model
    from unildiff.start import StartConfig

    config = BenchConfig(
        sizes=(32,), steps=(4,), repeats=2, warmup=0, backends=("torch", "onnxruntime", "tensorrt")
    )
    sampling = SamplingConfig(steps=4, cfg=5.0, tile_overlap=8, auto_tile=16)
    # SDEdit from t = 251: the model's own schedule (the photo row) runs 2 of SDXL's 4 leading steps
    # (751, 501, 251, 1); the size rows start from noise and run all 4.
    start = StartConfig(mode="lq", timestep=251, noise=1.0, training_fraction=0.5)
    report = run_bench(
        pipeline_from_model(tiny_model(), sampling, start),
        config,  # the photo (40x24) is tiled automatically, the sizes are not
        onnx_dir=tmp_path / "missing",
        engine_dir=tmp_path / "engines",
        photo=PhotoBench(width=40, height=24),
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
    assert end_to_end["graph_calls"] == 1 + 4 + 1 + 1  # encode, 4 denoise steps, decode, prompt encoding
    assert end_to_end["denoiser_calls"] == 4  # FLOPs count the steps that ran
    assert 0 <= end_to_end["loop_overhead_percent"] < 100
    assert loaded["sampling"]["start"]["timestep"] == 251 and "noise" in loaded["sampling"]["timing_rows"]
    assert end_to_end["flops_per_image_graphs"] == (
        row["lq_encoder"]["flops_per_call"]
        + 4 * row["denoiser_step_cfg"]["flops_per_call"]
        + row["decoder"]["flops_per_call"]
    )
    assert set(loaded["photo"]) == {"torch"}
    photo = loaded["photo"]["torch"]["40x24"]
    tiles = len(tile_grid(24, 40, 16, 8, 8))
    assert photo["tile_side"] == 16 and photo["tiles"] == tiles > 1
    assert photo["denoiser_calls"] == 2 * tiles  # every tile at each of the 2 steps that run
    assert photo["megapixels"] == 40 * 24 / 1e6
    assert photo["seconds_per_megapixel"] == pytest.approx(
        photo["median_ms"] / 1000 / photo["megapixels"], rel=1e-3
    )
    assert photo["peak_memory_mb"] > 0 and photo["steps"] == 4


def test_sdxl_size_builder_wires_a_model_that_runs():
    """The SDXL-size builder with shrunken configs (the real sizes need a GPU) gives a working model."""
    from unildiff.backends.torch import TorchGraphs
    from unildiff.bench.sdxl_size import SDXL_UNET, SDXL_VAE, build_sdxl_size_model

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


def test_bench_config_survives_the_worker_request():
    config = BenchConfig(
        sizes=(32, 64),
        steps=(2, 8),
        repeats=3,
        warmup=2,
        rounds=2,
        backends=("onnxruntime",),
        onnxruntime=OnnxRuntimeConfig(intra_op_threads=1, optimization="basic", allow_spinning=True),
    )
    assert bench_config_from_dict(json.loads(json.dumps(config_description(config)))) == config


def _backend_report(backend: str, median_ms: float) -> dict:
    """A one-backend report as a worker writes it; ``tensorrt`` is skipped as on a CPU host."""
    skipped = backend == "tensorrt"
    row = {"median_ms": median_ms, "images_per_s": 1000.0 / median_ms}
    return {
        "host": {"device": "cpu"},
        "config": {"backends": [backend], "rounds": 1},
        "sampling": {"cfg": 3.0},
        "components": {} if skipped else {backend: {"32px": {"decoder": dict(row)}}},
        "end_to_end": {} if skipped else {backend: {"32px_2steps": row}},
        "skipped": {"tensorrt": "no CUDA"} if skipped else {},
        "process_per_backend": False,
        "photo": {} if skipped else {backend: {"64x48": {"median_ms": 10 * median_ms}}},
    }


def test_merged_report_recomputes_speedups_across_processes():
    merged = merge_reports([[_backend_report("torch", 300.0), _backend_report("onnxruntime", 200.0)]])
    assert merged["process_per_backend"] is True
    assert merged["config"]["backends"] == ["torch", "onnxruntime"]
    assert merged["speedup_vs_torch"]["onnxruntime"] == {"32px_2steps": 1.5}
    assert "speedup_vs_torch_rounds" not in merged


def test_merged_rounds_report_the_median_round_and_pair_the_speedups():
    rounds = [
        [
            _backend_report("torch", 300.0),
            _backend_report("onnxruntime", 200.0),
            _backend_report("tensorrt", 1),
        ],
        [
            _backend_report("torch", 900.0),
            _backend_report("onnxruntime", 300.0),
            _backend_report("tensorrt", 1),
        ],
        [
            _backend_report("torch", 400.0),
            _backend_report("onnxruntime", 100.0),
            _backend_report("tensorrt", 1),
        ],
    ]
    merged = merge_reports(rounds)
    assert merged["config"]["rounds"] == 3
    assert merged["skipped"] == {"tensorrt": "no CUDA"}
    torch_row = merged["end_to_end"]["torch"]["32px_2steps"]
    assert torch_row["median_ms"] == 400.0 and torch_row["median_ms_rounds"] == [300.0, 900.0, 400.0]
    assert merged["end_to_end"]["onnxruntime"]["32px_2steps"]["median_ms"] == 200.0
    photo = merged["photo"]["torch"]["64x48"]
    assert photo["median_ms"] == 4000.0 and photo["median_ms_rounds"] == [3000.0, 9000.0, 4000.0]
    decoder = merged["components"]["torch"]["32px"]["decoder"]
    assert decoder["median_ms"] == 400.0 and decoder["images_per_s"] == 2.5  # one round's row, whole
    assert merged["speedup_vs_torch"]["onnxruntime"] == {"32px_2steps": 2.0}
    assert merged["speedup_vs_torch_rounds"]["onnxruntime"] == {"32px_2steps": [1.5, 3.0, 4.0]}


def test_isolated_bench_names_the_stage_of_a_missing_model(tmp_path):
    with pytest.raises(MissingArtifactError, match="run `dvc repro package`"):
        run_bench_isolated(
            tmp_path / "unildiff", BenchConfig(), onnx_dir=tmp_path / "onnx", engine_dir=tmp_path / "engines"
        )


def test_rounds_need_process_isolation(tmp_path):
    with pytest.raises(ConfigError, match="bench.rounds=2 needs one process per backend"):
        run_bench(None, BenchConfig(rounds=2), onnx_dir=tmp_path, engine_dir=tmp_path)


def test_isolated_bench_starts_no_process_for_a_backend_that_cannot_run(tmp_path, monkeypatch):
    """TensorRT on a CPU device is skipped with its reason before any worker starts (each worker pays
    the full import of torch and diffusers); the other backends each get their process."""
    import subprocess

    import unildiff.bench.isolated as isolated

    launched = []

    def fake_worker(command, input, **kwargs):
        request = json.loads(input)
        (backend,) = request["bench"]["backends"]
        launched.append(backend)
        Path(request["report"]).write_text(json.dumps(_backend_report(backend, 100.0)))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(isolated.subprocess, "run", fake_worker)
    model = tmp_path / "unildiff"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    report = run_bench_isolated(
        model,
        BenchConfig(device="cpu"),
        onnx_dir=tmp_path / "onnx",
        engine_dir=tmp_path / "engines",
    )
    assert launched == ["torch", "onnxruntime"]
    assert report["config"]["backends"] == ["torch", "onnxruntime", "tensorrt"]
    assert "runs on CUDA only" in report["skipped"]["tensorrt"]
    with pytest.raises(BackendUnavailableError, match="no backend of bench.backends can run here .tensorrt:"):
        run_bench_isolated(
            model, BenchConfig(backends=("tensorrt",)), onnx_dir=tmp_path, engine_dir=tmp_path
        )
    assert launched == ["torch", "onnxruntime"]
