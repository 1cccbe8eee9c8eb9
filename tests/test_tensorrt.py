"""TensorRT: the pure-Python checks run everywhere (small fakes stand in for TensorRT and CUDA);
the real engine build and run are marked ``tensorrt`` and skip with the reason where absent."""

from __future__ import annotations

import types

import pytest

from unildiff.backends import tensorrt as tensorrt_backend
from unildiff.errors import BackendUnavailableError, ConfigError, MissingArtifactError
from unildiff.export import tensorrt_build
from unildiff.export.config import Precision, TensorRTConfig, TensorRTProfileConfig
from unildiff.export.specs import GraphName, GraphSpec, TensorSpec
from unildiff.export.tensorrt_build import (
    EngineManifest,
    EngineRecord,
    check_shape_in_range,
    engine_dir_name,
    profile_shapes,
)

DENOISER = GraphSpec(
    GraphName.DENOISER,
    inputs=(
        TensorSpec("sample", ("batch", 4, "height/8", "width/8")),
        TensorSpec("timestep", ("batch",)),
        TensorSpec("encoder_hidden_states", ("batch", 16, 64)),
    ),
    outputs=(TensorSpec("noise_pred", ("batch", 4, "height/8", "width/8")),),
)
PROFILE = TensorRTProfileConfig(min_image_size=256, opt_image_size=512, max_image_size=1024)


def test_profile_shapes_double_the_denoiser_batch_for_cfg():
    shapes = profile_shapes(DENOISER, PROFILE)
    assert shapes["sample"] == ((1, 4, 32, 32), (2, 4, 64, 64), (2, 4, 128, 128))
    assert shapes["timestep"] == ((1,), (2,), (2,))
    assert shapes["encoder_hidden_states"][2] == (2, 16, 64)


def test_profile_config_refuses_unordered_sizes_and_bad_precision():
    with pytest.raises(ConfigError, match="min_image_size <= opt_image_size"):
        TensorRTProfileConfig(min_image_size=512, opt_image_size=256, max_image_size=1024)
    with pytest.raises(ConfigError, match="tensorrt.profile.max_image_size"):
        TensorRTProfileConfig(max_image_size=1020)
    with pytest.raises(ConfigError, match="tensorrt.decoder_precision"):
        TensorRTConfig(decoder_precision="int4")
    assert TensorRTConfig().denoiser_precision is Precision.FP16
    assert TensorRTConfig().decoder_precision is Precision.TF32


def test_shape_outside_profile_is_refused_with_the_range():
    shape_range = profile_shapes(DENOISER, PROFILE)["sample"]
    check_shape_in_range(GraphName.DENOISER, "sample", (2, 4, 64, 96), shape_range)
    with pytest.raises(ConfigError, match=r"2x4x256x256.*min 1x4x32x32, max 2x4x128x128"):
        check_shape_in_range(GraphName.DENOISER, "sample", (2, 4, 256, 256), shape_range)
    with pytest.raises(ConfigError, match="outside"):
        check_shape_in_range(GraphName.DENOISER, "sample", (3, 4, 64, 64), shape_range)


def test_engine_folder_is_named_by_gpu_and_version():
    assert engine_dir_name("NVIDIA H100 80GB HBM3", "10.3.0") == "nvidia-h100-80gb-hbm3_trt10.3.0"


def _manifest(tmp_path, gpu="NVIDIA A100-SXM4-40GB", version="10.0.1"):
    shapes = profile_shapes(DENOISER, PROFILE)
    records = {graph.value: EngineRecord(f"{graph.value}.plan", "fp16", shapes) for graph in GraphName}
    folder = tmp_path / engine_dir_name(gpu, version)
    EngineManifest(gpu, "8.0", version, 16, records).save(folder)
    return folder


def test_manifest_round_trips_and_refuses_another_gpu_or_version(tmp_path):
    folder = _manifest(tmp_path)
    manifest = EngineManifest.load(folder)
    assert manifest.engines["denoiser"].shapes["sample"][2] == (2, 4, 128, 128)
    manifest.check_compatible("NVIDIA A100-SXM4-40GB", "10.0.1")
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 10\.0\.1.*TensorRT 10\.3\.0"):
        manifest.check_compatible("NVIDIA A100-SXM4-40GB", "10.3.0")
    with pytest.raises(BackendUnavailableError, match="A100.*H100"):
        manifest.check_compatible("NVIDIA H100 80GB HBM3", "10.0.1")


def test_runtime_refuses_foreign_engines_before_loading_them(tmp_path, monkeypatch):
    """A fake TensorRT 10.3.0 on a fake H100 is offered engines built with 10.0.1 on an A100."""
    _manifest(tmp_path)
    fake_trt = types.SimpleNamespace(__version__="10.3.0")
    monkeypatch.setattr(tensorrt_backend, "import_tensorrt", lambda: fake_trt)
    monkeypatch.setattr(tensorrt_backend, "cuda_device_identity", lambda: ("NVIDIA H100 80GB HBM3", "9.0"))
    with pytest.raises(BackendUnavailableError, match=r"A100-SXM4-40GB.*10\.0\.1.*H100 80GB HBM3.*10\.3\.0"):
        tensorrt_backend.TensorRTGraphs(tmp_path)


def test_runtime_without_engines_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(
        tensorrt_backend, "import_tensorrt", lambda: types.SimpleNamespace(__version__="10.3.0")
    )
    monkeypatch.setattr(tensorrt_backend, "cuda_device_identity", lambda: ("NVIDIA H100", "9.0"))
    with pytest.raises(MissingArtifactError, match="unildiff export tensorrt"):
        tensorrt_backend.TensorRTGraphs(tmp_path / "engines")


def test_missing_tensorrt_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed") as raised:
        tensorrt_build.import_tensorrt()
    assert "\n" not in str(raised.value)


@pytest.mark.tensorrt
def test_engines_build_and_match_torch(tmp_path):  # pragma: no cover - needs TensorRT + CUDA
    """On a CUDA host with TensorRT: build tiny engines, run them and compare with torch on the GPU."""
    import torch

    from tests.test_export_onnx import exported_tiny
    from unildiff.export.parity import output_difference

    onnx_dir, model, graphs, lq = exported_tiny(tmp_path)
    config = TensorRTConfig(profile=TensorRTProfileConfig(32, 64, 64), workspace_gib=1.0)
    tensorrt_build.build_engines(onnx_dir, tmp_path / "engines", config)
    engines = tensorrt_backend.TensorRTGraphs(tmp_path / "engines")
    for module in (graphs.conditioner, graphs.denoiser, graphs.decoder):
        module.cuda()
    image = lq[:1].cuda()
    expected, actual = graphs.encode_lq(image), engines.encode_lq(image)
    difference = output_difference(
        (expected.lq_features, expected.lq_latent), (actual.lq_features, actual.lq_latent)
    )
    assert difference.within(1e-2), difference  # TF32
    decoded = output_difference(
        [graphs.decode(expected.lq_latent, expected.skips)],
        [engines.decode(expected.lq_latent, expected.skips)],
    )
    assert decoded.within(1e-2), decoded
    with pytest.raises(ConfigError, match="outside the TensorRT engine profile"):
        engines.encode_lq(torch.zeros(1, 3, 128, 128, device="cuda"))
