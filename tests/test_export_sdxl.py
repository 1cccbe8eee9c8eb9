"""``unildiff export onnx --sdxl-size``: the SDXL-size restoration graphs (random weights), checked the way a
user checks them: the command itself at a reduced width (``--width-divisor 16``: every block, layer,
transformer depth and head count of SDXL, 1/16 of the channels), then ONNX's checker on the paths, ONNX
Runtime through the project's backend, ``polygraphy inspect model`` / ``polygraphy run --onnxrt``, and the
TensorRT profiles against each graph's own dynamic axes. The real size is a run of the same command,
recorded in docs/deployment.md (about an hour here, at most 6.2 GiB per process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from unildiff.cli import app
from unildiff.export.config import Precision
from unildiff.export.specs import ExportManifest, GraphName
from unildiff.export.tensorrt_build import graph_float_type, strongly_typed

REPO_ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ("lq_encoder", "denoiser", "decoder")


def test_sdxl_preset_daff_and_daem_are_the_config_defaults():
    """The graphs use SDXL_DAFF / SDXL_DAEM: what presets/sdxl.yaml makes of params.yaml."""
    from unildiff.bench.sdxl_size import SDXL_DAEM, SDXL_DAFF
    from unildiff.models.config import DAEMConfig, DAFFConfig
    from unildiff.params import build, parse_yaml

    params = parse_yaml((REPO_ROOT / "params.yaml").read_text(), "params.yaml")
    preset = parse_yaml((REPO_ROOT / "presets/sdxl.yaml").read_text(), "presets/sdxl.yaml")
    daff = build(DAFFConfig, {**params["daff"], **preset.get("daff", {})}, "daff")
    daem = build(DAEMConfig, {**params["daem"], **preset.get("daem", {})}, "daem")
    assert daff == SDXL_DAFF and daem == SDXL_DAEM


def test_width_divisor_keeps_the_block_structure():
    from unildiff.bench.sdxl_size import SDXL_UNET, SDXL_VAE, sdxl_unet_config, sdxl_vae_config

    assert sdxl_unet_config(1) == SDXL_UNET and sdxl_vae_config(1) == SDXL_VAE
    unet = sdxl_unet_config(16)
    for key in ("down_block_types", "layers_per_block", "attention_head_dim", "transformer_layers_per_block"):
        assert unet[key] == SDXL_UNET[key], key
    assert unet["block_out_channels"] == (20, 40, 80) and unet["cross_attention_dim"] == 128
    assert unet["projection_class_embeddings_input_dim"] == 80 + 6 * 16
    assert sdxl_vae_config(16)["block_out_channels"] == (8, 16, 32, 32)
    with pytest.raises(ValueError, match="width divisor"):
        sdxl_unet_config(3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dtype", "fp8"], "--dtype must be one of"),
        (["--vae-dtype", "int8"], "--vae-dtype must be one of"),
        (["--width-divisor", "3"], "--width-divisor must be one of"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, arguments, message):
    output = tmp_path / "onnx"
    result = CliRunner().invoke(
        app,
        [
            "export",
            "onnx",
            "--sdxl-size",
            "--output",
            str(output),
            "--parity",
            str(tmp_path / "p.json"),
            *arguments,
        ],
    )
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not output.exists() and not (tmp_path / "p.json").exists()


def test_strong_typing_follows_the_graph_and_refuses_what_it_cannot_build():
    """TensorRT 11 has no weak typing: an fp16 engine needs an fp16 graph; TensorRT 10 may use the flag."""
    assert strongly_typed(GraphName.DENOISER, Precision.FP16, "fp16", weak_typing=False)
    assert strongly_typed(GraphName.DENOISER, Precision.FP16, "fp16", weak_typing=True)
    assert not strongly_typed(GraphName.DENOISER, Precision.FP16, "fp32", weak_typing=True)
    assert strongly_typed(GraphName.DECODER, Precision.TF32, "fp32", weak_typing=False)
    assert not strongly_typed(GraphName.DECODER, Precision.TF32, "fp32", weak_typing=True)
    with pytest.raises(
        Exception, match=r"tensorrt.denoiser_precision=fp16 needs a fp16 ONNX graph on TensorRT 11"
    ):
        strongly_typed(GraphName.DENOISER, Precision.FP16, "fp32", weak_typing=False)
    with pytest.raises(Exception, match=r"decoder.onnx holds fp16 weights.*tensorrt.decoder_precision=tf32"):
        strongly_typed(GraphName.DECODER, Precision.TF32, "fp16", weak_typing=True)
    with pytest.raises(Exception, match=r"tensorrt.lq_encoder_precision=bf16"):
        strongly_typed(GraphName.LQ_ENCODER, Precision.BF16, "fp32", weak_typing=True)


def test_fp16_graphs_are_checked_with_late_weight_casts_and_no_arena(tmp_path):
    """The check phase's ONNX Runtime session for fp16 / bf16 graphs (what keeps the full-size fp16 denoiser's
    check at 6 GB instead of 13-20 GB) reaches the session the backend opens; fp32 graphs keep every
    optimisation."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from unildiff.backends.onnxruntime import OnnxSession
    from unildiff.export.sdxl_export import check_session_config

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float16) * 2, "weight")
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["x16", "weight"], ["y16"]),  # no fp16 MatMul on x86 CPU: a cast of weight
        helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[weight],
    )
    path = tmp_path / "fp16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    session = OnnxSession(path, check_session_config("fp16"))
    options = session.session.get_session_options()
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert options.execution_order == onnxruntime.ExecutionOrder.PRIORITY_BASED
    assert not options.enable_cpu_mem_arena and not options.enable_mem_pattern
    x = torch.arange(8.0).reshape(2, 4)
    assert torch.equal(session(x)[0], 2 * x)
    assert check_session_config("bf16") == check_session_config("fp16")
    fp32 = check_session_config("fp32")
    assert fp32.optimization.value == "all" and fp32.execution_order.value == "default"
    assert fp32.cpu_mem_arena and fp32.mem_pattern


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The user's command at 1/16 width: fp16 denoiser, fp32 LQ encoder and decoder (the defaults)."""
    folder = tmp_path_factory.mktemp("sdxl")
    output, parity = folder / "onnx_sdxl", folder / "parity_sdxl.json"
    unildiff = str(Path(sys.executable).parent / "unildiff")
    command = [unildiff, "export", "onnx", "--sdxl-size", "--width-divisor", "16"]
    completed = subprocess.run(
        [*command, "--output", str(output), "--parity", str(parity)],
        capture_output=True,
        text=True,
        cwd=folder,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    return output, json.loads(parity.read_text()), completed.stdout


@pytest.mark.slow
def test_graphs_are_written_with_external_data_and_pass_the_checker(exported):
    output, report, stdout = exported
    manifest = ExportManifest.load(output)
    assert sorted(name.value for name in manifest.graphs) == sorted(GRAPHS)
    assert manifest.pixel_multiple == 32
    for name in GRAPHS:
        path = output / f"{name}.onnx"
        assert (output / f"{name}.onnx.data").stat().st_size > path.stat().st_size
        onnx.checker.check_model(str(path), full_check=True)
        assert str(REPO_ROOT) not in path.read_text(errors="ignore")  # no stack traces with local paths
    assert graph_float_type(output / "denoiser.onnx") == "fp16"
    assert graph_float_type(output / "decoder.onnx") == graph_float_type(output / "lq_encoder.onnx") == "fp32"
    assert "peak RSS" in stdout


@pytest.mark.slow
def test_parity_report_is_within_tolerance_at_both_sizes(exported):
    from unildiff.export.sdxl_export import check_session_config

    _, report, _ = exported
    assert report["all_within_tolerance"]
    for name in GRAPHS:
        graph = report["graphs"][name]
        assert [item["input_shape"][0] for item in graph["input_sets"]] == [2, 1]  # batch 2, then batch 1
        assert [item["input_shape"][-1] for item in graph["input_sets"]][1] < graph["input_sets"][0][
            "input_shape"
        ][-1]
        for item in graph["input_sets"]:
            assert item["max_abs_diff"] <= graph["atol_relative"] * max(1.0, item["max_abs_torch_output"])
        assert graph["peak_rss_gib"]["export"] > 0 and graph["peak_rss_gib"]["check"] > 0
        session = check_session_config(graph["dtype"])
        assert graph["onnxruntime_session"] == {
            "optimization": session.optimization.value,
            "execution_order": session.execution_order.value,
            "cpu_mem_arena": session.cpu_mem_arena,
            "mem_pattern": session.mem_pattern,
        }
        assert graph["parameters"] > 0
    # fp16 arithmetic differs from torch's fp16 (another order of operations); fp32 graphs barely
    assert report["graphs"]["denoiser"]["dtype"] == "fp16"
    assert report["graphs"]["denoiser"]["onnxruntime_session"]["execution_order"] == "priority_based"
    assert report["graphs"]["decoder"]["atol_relative"] == 1e-3


@pytest.mark.slow
def test_onnxruntime_backend_runs_the_graphs_and_matches_the_torch_samples(exported):
    """The project's own ONNX Runtime backend opens the folder and reproduces the saved torch outputs."""
    from unildiff.backends.onnxruntime import OnnxRuntimeGraphs
    from unildiff.export.config import OnnxRuntimeConfig
    from unildiff.export.parity import output_difference

    output, _, _ = exported
    graphs = OnnxRuntimeGraphs(output, OnnxRuntimeConfig(prefer_cuda=False))
    samples = {name: load_file(str(output / "samples" / f"{name}.safetensors")) for name in GRAPHS}
    lq = samples["lq_encoder"]["input.lq"]
    encoding = graphs.encode_lq(lq)
    expected = samples["lq_encoder"]
    difference = output_difference(
        [expected["torch.lq_features"], expected["torch.lq_latent"]],
        [encoding.lq_features, encoding.lq_latent],
    )
    assert difference.within(1e-3), difference
    denoise = samples["denoiser"]
    names = ("sample", "timestep", "lq_features", "encoder_hidden_states", "text_embeds", "time_ids")
    noise = graphs.denoise(*(denoise[f"input.{name}"] for name in names))
    assert output_difference([denoise["torch.noise_pred"]], [noise]).within(2e-2)
    decode = samples["decoder"]
    skips = tuple(decode[f"input.skip_{index}"] for index in range(4))
    image = graphs.decode(decode["input.latents"], skips)
    assert output_difference([decode["torch.image"]], [image]).within(1e-3)


@pytest.mark.slow
def test_tensorrt_profiles_match_each_graphs_dynamic_axes(exported):
    """Every profile names exactly the graph's inputs, with their ranks; static dims are the graph's own
    value at min/opt/max, and only dynamic dims vary; the denoiser's batch doubles for CFG."""
    output, _, _ = exported
    profiles = json.loads((output / "tensorrt_profiles.json").read_text())
    assert profiles["profile"]["min_image_size"] <= profiles["profile"]["max_image_size"]
    for name in GRAPHS:
        model = onnx.load(str(output / f"{name}.onnx"), load_external_data=False)
        graph_inputs = {value.name: value.type.tensor_type.shape.dim for value in model.graph.input}
        profile = profiles["graphs"][name]["inputs"]
        assert set(profile) == set(graph_inputs), name
        for input_name, dims in graph_inputs.items():
            shapes = profile[input_name]
            assert len(shapes["min"]) == len(shapes["opt"]) == len(shapes["max"]) == len(dims)
            for axis, dim in enumerate(dims):
                low, mid, high = (shapes[key][axis] for key in ("min", "opt", "max"))
                assert 1 <= low <= mid <= high, (name, input_name, axis)
                if dim.dim_param:
                    continue
                assert low == mid == high == dim.dim_value, (name, input_name, axis)
            if len(dims) == 4:  # image-like: the spatial axes must be dynamic and span the profile
                assert dims[2].dim_param and dims[3].dim_param and shapes["min"][2] < shapes["max"][2]
    denoiser = profiles["graphs"]["denoiser"]["inputs"]["sample"]
    lq = profiles["graphs"]["lq_encoder"]["inputs"]["lq"]
    assert denoiser["max"][0] == 2 * lq["max"][0]
    assert denoiser["max"][2] * 8 == lq["max"][2]
    assert profiles["graphs"]["denoiser"]["dtype"] == "fp16"
    # daff.lq_scales: 3 (the sdxl preset): f^LQ stacks the mid block (32 channels at 1/16 width), level 2
    # (32 x 4) and level 1 (16 x 16) on the latent grid; the LQ encoder's output is the denoiser's input
    features = profiles["graphs"]["denoiser"]["inputs"]["lq_features"]
    assert features["min"][1] == features["max"][1] == 32 + 32 * 4 + 16 * 16
    assert features["max"][2] == denoiser["max"][2]


@pytest.mark.slow
def test_polygraphy_inspects_the_graphs_and_onnxrt_agrees_with_torch(exported, tmp_path):
    """``polygraphy inspect model`` reads every graph; ``polygraphy run --onnxrt`` on the saved input
    agrees with the saved torch outputs within the report's tolerance."""
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import save_json

    polygraphy = shutil.which("polygraphy", path=str(Path(sys.executable).parent))
    assert polygraphy, "polygraphy is a dev dependency"
    output, report, _ = exported
    for name in GRAPHS:
        path = output / f"{name}.onnx"
        inspected = subprocess.run(
            [polygraphy, "inspect", "model", str(path), "--show", "layers"], capture_output=True, text=True
        )
        assert inspected.returncode == 0, inspected.stderr[-2000:]
        assert "---- 1 Graph Input" in inspected.stdout or "Graph Input" in inspected.stdout
        samples = load_file(str(output / "samples" / f"{name}.safetensors"))
        model_inputs = {value.name for value in onnx.load(str(path), load_external_data=False).graph.input}
        feed = {
            key[6:]: t.numpy()
            for key, t in samples.items()
            if key.startswith("input.") and key[6:] in model_inputs
        }
        torch_out = {key[6:]: t.numpy() for key, t in samples.items() if key.startswith("torch.")}
        save_json([feed], tmp_path / f"{name}_inputs.json")
        save_json(
            RunResults([("torch", [IterationResult(torch_out, runner_name="torch")])]),
            tmp_path / f"{name}_torch.json",
        )
        scale = max(1.0, max(float(torch.from_numpy(v).abs().max()) for v in torch_out.values()))
        atol = report["graphs"][name]["atol_relative"] * scale
        command = [
            polygraphy,
            "run",
            str(path),
            "--onnxrt",
            "--load-inputs",
            str(tmp_path / f"{name}_inputs.json"),
        ]
        ran = subprocess.run(
            [
                *command,
                "--load-outputs",
                str(tmp_path / f"{name}_torch.json"),
                "--atol",
                str(atol),
                "--rtol",
                "0",
            ],
            capture_output=True,
            text=True,
        )
        assert ran.returncode == 0, (name, ran.stdout[-3000:], ran.stderr[-2000:])
        assert "PASSED" in ran.stdout + ran.stderr
