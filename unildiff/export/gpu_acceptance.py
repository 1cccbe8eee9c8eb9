"""``unildiff gpu-acceptance``: every GPU check of the deployment path in one run, one JSON report.

Checks (each ``passed`` | ``failed`` | ``skipped`` with the reason; the command exits 1 when one failed):

- ``torch_bf16_restoration``: the SDXL-size model (random weights, :mod:`unildiff.bench.sdxl_size`) in
  bf16 on CUDA restores 512² and 1024² images, 20 Euler steps from noise, CFG 5, timed by
  :func:`unildiff.bench.run.run_bench` (median time, peak memory); wrong = a non-finite or out-of-range
  image, or the bf16 denoiser departing from fp32 on the same input by more than 5 % of its scale.
- ``tensorrt``: where TensorRT is installed and ``unildiff export onnx --sdxl-size`` graphs exist, the
  engines are built (``export/engines``) and timed against torch bf16 in the same bench; wrong = an engine
  output departing from the torch outputs the export saved (``samples/``) by more than 5 % of their scale.
- ``training_steps``: one AdamW step of stage 1a, 1b and 2 at SDXL size, 512², batch 1, bf16 autocast,
  gradient checkpointing on (trainable weights fp32, frozen bf16, as ``unildiff plan`` assumes), with the
  peak CUDA memory against the plan's per-GPU prediction (DDP state + checkpointed activations); wrong =
  a non-finite loss or gradient, or no gradient at all.

Everything runs from random weights and local files: no network, no trained model.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
RELATIVE_TOLERANCE = 5e-2
"""bf16 / TensorRT fp16 outputs against fp32 / the saved torch outputs, relative to max(1, max|ref|)."""


def _skipped(reason: str) -> dict:
    return {"status": SKIPPED, "reason": reason}


def _failed(reason: str, **details) -> dict:
    return {"status": FAILED, "reason": reason, **details}


def host() -> dict:
    """The machine, as the report records it."""
    import torch

    description = {"python": platform.python_version(), "torch": torch.__version__, "cuda": None}
    if torch.cuda.is_available():
        description["cuda"] = torch.version.cuda
        description["gpu"] = torch.cuda.get_device_name(0)
    try:
        import tensorrt

        description["tensorrt"] = tensorrt.__version__
    except ImportError:
        description["tensorrt"] = None
    return description


def _relative(reference, candidate) -> float:
    from unildiff.export.parity import output_difference

    difference = output_difference(reference, candidate)
    return difference.max_abs / max(1.0, difference.scale)


def check_bf16_denoiser(model) -> dict:
    """The bf16 denoiser against fp32 on one CFG batch at 512² (same weights, same inputs)."""
    import torch

    from unildiff.models.text import make_time_ids

    unet = model.unet
    generator = torch.Generator(device="cuda").manual_seed(0)
    latent = torch.randn((2, 4, 64, 64), generator=generator, device="cuda")
    lq_features = torch.randn((2, model.lq_encoder.out_channels, 64, 64), generator=generator, device="cuda")
    text = torch.randn((2, 77, unet.config.cross_attention_dim), generator=generator, device="cuda")
    pooled_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    pooled = torch.randn((2, pooled_dim), generator=generator, device="cuda")
    arguments = (latent, torch.full((2,), 499.0, device="cuda"), lq_features, text, pooled)
    denoiser = model.denoiser()
    outputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        denoiser.to(dtype)
        cast = [argument.to(dtype) for argument in arguments]
        with torch.no_grad():
            outputs[dtype] = denoiser(*cast, make_time_ids(512, 512, 2).cuda()).float()
    return {"bf16_vs_fp32_relative": _relative([outputs[torch.float32]], [outputs[torch.bfloat16]])}


def check_restoration(sizes: tuple[int, ...], engine_root: Path | None) -> dict:
    """Time torch bf16 (and TensorRT when ``engine_root`` has engines) end to end; sanity-check outputs."""
    import torch

    from unildiff.backends import Backend, open_backend
    from unildiff.backends.torch import CastGraphs
    from unildiff.bench.config import BenchConfig
    from unildiff.bench.run import run_bench
    from unildiff.bench.sdxl_size import build_sdxl_size_model
    from unildiff.pipeline_unildiff import pipeline_from_model

    model = build_sdxl_size_model("cuda")
    result = {"bf16": check_bf16_denoiser(model)}
    unildiff = pipeline_from_model(model)  # the paper's settings: Euler, 20 steps from pure noise, CFG 5
    backends = ("torch", "tensorrt") if engine_root is not None else ("torch",)
    config = BenchConfig(
        sizes=sizes, steps=(20,), repeats=3, warmup=1, backends=backends, device="cuda", dtype="bf16"
    )
    report = run_bench(unildiff, config, onnx_dir=Path("-"), engine_dir=engine_root or Path("-"))
    result["bench"] = {key: report[key] for key in ("end_to_end", "speedup_vs_torch", "skipped", "host")}
    graphs = CastGraphs(open_backend(Backend.TORCH, model=model, device="cuda"), torch.bfloat16)
    pipeline = unildiff.sampler(graphs=graphs)
    problems = []
    for size in sizes:
        lq = torch.rand((1, 3, size, size), device="cuda") * 2 - 1
        image = pipeline(lq, "remove noise", torch.Generator(device="cuda").manual_seed(0))
        if tuple(image.shape) != (1, 3, size, size) or not bool(image.isfinite().all()):
            problems.append(f"{size}²: shape {tuple(image.shape)} or non-finite values")
        elif float(image.abs().max()) > 1.0 + 1e-3:
            problems.append(f"{size}²: values outside [-1, 1] ({float(image.abs().max()):.3f})")
    if result["bf16"]["bf16_vs_fp32_relative"] > RELATIVE_TOLERANCE:
        problems.append(f"bf16 denoiser departs from fp32 by {result['bf16']['bf16_vs_fp32_relative']:.3g}")
    del model, unildiff, graphs, pipeline
    torch.cuda.empty_cache()
    return _failed("; ".join(problems), **result) if problems else {"status": PASSED, **result}


def check_tensorrt_engines(onnx_dir: Path, engine_root: Path) -> dict:
    """Build the engines from the SDXL-size graphs and compare them with the torch outputs saved at export."""
    from safetensors.torch import load_file

    from unildiff.backends.tensorrt import TensorRTGraphs
    from unildiff.export.config import TensorRTConfig, TensorRTProfileConfig
    from unildiff.export.tensorrt_build import build_engines

    profile = TensorRTProfileConfig(min_image_size=256, opt_image_size=1024, max_image_size=1024)
    start = time.perf_counter()
    folder = build_engines(
        onnx_dir, engine_root, TensorRTConfig(profile=profile, builder_optimization_level=2)
    )
    seconds = time.perf_counter() - start
    engines = TensorRTGraphs(engine_root)
    samples = {
        path.stem: load_file(str(path)) for path in sorted((onnx_dir / "samples").glob("*.safetensors"))
    }
    differences = {}
    lq = samples["lq_encoder"]["input.lq"].cuda()
    encoding = engines.encode_lq(lq)
    expected = samples["lq_encoder"]
    differences["lq_encoder"] = _relative(
        [expected["torch.lq_features"], expected["torch.lq_latent"]],
        [encoding.lq_features, encoding.lq_latent],
    )
    names = ("sample", "timestep", "lq_features", "encoder_hidden_states", "text_embeds", "time_ids")
    denoise = samples["denoiser"]
    noise = engines.denoise(*(denoise[f"input.{name}"].cuda() for name in names))
    differences["denoiser"] = _relative([denoise["torch.noise_pred"]], [noise])
    decode = samples["decoder"]
    skips = tuple(decode[key].cuda() for key in sorted(decode) if key.startswith("input.skip_"))
    differences["decoder"] = _relative(
        [decode["torch.image"]], [engines.decode(decode["input.latents"].cuda(), skips)]
    )
    result = {
        "engine_dir": str(folder),
        "build_seconds": round(seconds, 1),
        "relative_difference": differences,
    }
    bad = [name for name, value in differences.items() if not value <= RELATIVE_TOLERANCE]
    if bad:
        return _failed(f"TensorRT departs from torch on {', '.join(bad)}", **result)
    return {"status": PASSED, **result}


def check_training_steps(image_size: int = 512) -> dict:
    """One AdamW step per stage, bf16 autocast, gradient checkpointing; peak memory against the plan."""
    import torch

    from unildiff.bench.sdxl_size import SDXL_DAFF, SDXL_UNET, SDXL_VAE
    from unildiff.models.config import DAEMConfig
    from unildiff.training.plan import plan_stage, stage_modules

    planned_stages, planned_switch = stage_modules(SDXL_UNET, SDXL_VAE, SDXL_DAFF, DAEMConfig())
    plans = {
        stage.stage: plan_stage(stage, image_size, 1, "adamw", planned_switch) for stage in planned_stages
    }
    stages, checkpointing = stage_modules(
        SDXL_UNET, SDXL_VAE, SDXL_DAFF, DAEMConfig(), torch.bfloat16, device="cuda"
    )
    checkpointing(True)
    rows, problems = {}, []
    every = {id(module): module for stage in stages for module in (*stage.trainable, *stage.frozen)}
    for stage in stages:
        in_stage = {id(module) for module in (*stage.trainable, *stage.frozen)}
        for key, module in every.items():
            if key not in in_stage:
                module.to("cpu")
        for module in stage.frozen:
            module.to("cuda", torch.bfloat16).requires_grad_(False).eval()
        for module in stage.trainable:
            module.to("cuda", torch.float32).requires_grad_(True).train()
        parameters = list({id(p): p for m in stage.trainable for p in m.parameters()}.values())
        optimizer = torch.optim.AdamW(parameters, lr=1e-6)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = stage.forward(1, image_size).float().square().mean()
        loss.backward()
        gradients = [p.grad for p in parameters if p.grad is not None]
        finite = math.isfinite(float(loss)) and all(bool(g.isfinite().all()) for g in gradients)
        nonzero = any(bool(g.any()) for g in gradients)
        optimizer.step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated()
        plan = plans[stage.stage]
        predicted = sum(plan.state_bytes["ddp"].values()) + plan.checkpointed_activation_bytes
        rows[stage.stage] = {
            "loss": float(loss),
            "seconds": round(seconds, 2),
            "peak_gib": round(peak / 2**30, 2),
            "plan_gib": round(predicted / 2**30, 2),
            "measured_over_plan": round(peak / predicted, 3),
        }
        if not (finite and nonzero):
            problems.append(f"{stage.stage}: non-finite loss/gradient or no gradient")
        optimizer.zero_grad(set_to_none=True)
        del optimizer, loss, gradients
    return _failed("; ".join(problems), stages=rows) if problems else {"status": PASSED, "stages": rows}


def run_acceptance(onnx_dir: Path, engine_root: Path, sizes: tuple[int, ...] = (512, 1024)) -> dict:
    """Run every check the host allows; the report says why the others were skipped."""
    import torch

    report = {"host": host(), "checks": {}}
    checks = report["checks"]
    if not torch.cuda.is_available():
        reason = f"CUDA is not available (torch {torch.__version__}, no GPU visible)"
        for name in ("torch_bf16_restoration", "tensorrt", "training_steps"):
            checks[name] = _skipped(reason)
    else:
        engines = None
        if report["host"]["tensorrt"] is None:
            checks["tensorrt"] = _skipped("TensorRT is not installed (pip install 'unildiff[tensorrt]')")
        elif not (onnx_dir / "graphs.json").is_file():
            checks["tensorrt"] = _skipped(
                f"no SDXL-size graphs in {onnx_dir}: run `unildiff export onnx --sdxl-size`"
            )
        else:
            checks["tensorrt"] = _guarded(lambda: check_tensorrt_engines(onnx_dir, engine_root))
            engines = engine_root if checks["tensorrt"]["status"] == PASSED else None
        checks["torch_bf16_restoration"] = _guarded(lambda: check_restoration(sizes, engines))
        checks["training_steps"] = _guarded(check_training_steps)
    report["passed"] = all(check["status"] != FAILED for check in checks.values())
    return report


def _guarded(check) -> dict:
    """Run ``check``; an exception is a failed check with its one-line reason (the run goes on)."""
    try:
        return check()
    except Exception as error:  # any failure of a check is reported, not raised
        text = str(error).strip().splitlines()
        return _failed(f"{type(error).__name__}: {text[0] if text else ''}"[:500])


def description(report: dict) -> list[str]:
    """One line per check for the terminal."""
    return [
        f"{name}: {check['status']}" + (f" ({check['reason']})" if check.get("reason") else "")
        for name, check in report["checks"].items()
    ]
