"""`unildiff plan`: the memory arithmetic and the meta-device activation count (docs/scaling.md)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from unildiff.cli import app
from unildiff.training.plan import micro_batch, saved_activation_bytes, state_bytes


def test_state_bytes_shard_what_each_strategy_shards() -> None:
    state = state_bytes(trainable=1000, frozen=500, gpus=4, optimizer="adamw", frozen_bytes=2)
    assert state["ddp"] == {"weights": 5000, "gradients": 4000, "optimizer": 8000}
    assert state["zero2"] == {"weights": 5000, "gradients": 1000, "optimizer": 2000}
    assert state["fsdp"] == {"weights": 1250, "gradients": 1000, "optimizer": 2000}
    assert state_bytes(1000, 0, 1, "adamw_8bit")["ddp"]["optimizer"] == 2000
    with pytest.raises(ValueError, match="optimizer"):
        state_bytes(1, 0, 1, "sgd")


def test_saved_activations_are_counted_on_the_meta_device_and_scale_with_pixels() -> None:
    with torch.device("meta"):
        network = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU())

    def run(size: int) -> int:
        return saved_activation_bytes(lambda: network(torch.empty(2, 3, size, size, device="meta")))

    # conv saves its input and its weight; SiLU saves its input: 2·3·S² + 2·8·S² floats. The weight is a
    # parameter (counted with the weights), not an activation.
    assert run(16) == (2 * 3 * 16 * 16 + 2 * 8 * 16 * 16) * 4
    assert run(32) == 4 * run(16)  # per-pixel activations
    with torch.no_grad():
        assert saved_activation_bytes(lambda: network(torch.empty(2, 3, 16, 16, device="meta"))) == 0


def test_attention_counts_as_the_fused_kernel_not_the_attention_matrix() -> None:
    """On meta, SDPA would take the math path and save (B, heads, N, N) weights; training runs fused kernels
    (CUDA flash / memory-efficient, CPU flash) that save q, k, v, the output and the log-sum-exp."""
    import torch.nn.functional as F

    query, key, value = (torch.empty(1, 4, 512, 16, device="meta", requires_grad=True) for _ in range(3))
    counted = saved_activation_bytes(lambda: F.scaled_dot_product_attention(query, key, value))
    assert counted == (4 * 4 * 512 * 16 + 4 * 512) * 4  # q, k, v, the output, the log-sum-exp; no 512²
    real = [torch.randn(1, 4, 64, 16, requires_grad=True) for _ in range(3)]
    meta = [torch.empty(1, 4, 64, 16, device="meta", requires_grad=True) for _ in range(3)]
    cpu_bytes = saved_activation_bytes(lambda: F.scaled_dot_product_attention(*real))
    assert saved_activation_bytes(lambda: F.scaled_dot_product_attention(*meta)) == cpu_bytes
    assert F.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"  # patch undone


def test_tiny_stages_plan_with_checkpointing_saving_memory() -> None:
    from unildiff.models.config import TINY, DAEMConfig, DAFFConfig
    from unildiff.training.plan import plan_stage, stage_modules

    unet = dict(TINY["unet"], cross_attention_dim=64)
    unet["projection_class_embeddings_input_dim"] = 6 * unet["addition_time_embed_dim"] + 32
    stages, checkpointing = stage_modules(unet, TINY["vae"], DAFFConfig(width=16, num_heads=2), DAEMConfig())
    plans = {stage.stage: plan_stage(stage, 64, 2, "adamw", checkpointing) for stage in stages}
    assert set(plans) == {"stage1a", "stage1b", "stage2"}
    daff, joint = plans["stage1a"], plans["stage1b"]
    assert daff.trainable_parameters < joint.trainable_parameters and joint.frozen_parameters == 0
    # Stage 1a trains DAFF only but still backpropagates through the frozen UNet after the hook.
    assert daff.activation_bytes > 0
    assert joint.checkpointed_activation_bytes < joint.activation_bytes
    assert micro_batch(joint, "ddp", 2**40, checkpointed=True) > micro_batch(joint, "ddp", 2**40, False)


def test_plan_refuses_bad_options_in_one_line() -> None:
    result = CliRunner().invoke(app, ["plan", "--dtype", "int8"])
    assert result.exit_code != 0
    assert "--dtype" in result.output and "Traceback" not in result.output
