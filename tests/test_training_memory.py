"""Memory switches of issue 14 on the tiny model: gradient checkpointing and the fp32 decoder path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from unildiff.models.bundle import build_model
from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.models.prior import build_tiny_prior
from unildiff.training.batches import LatentBatch
from unildiff.training.loop import enable_gradient_checkpointing
from unildiff.training.objectives import DecoderObjective

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model(
        build_tiny_prior(PriorConfig(), seed=0),
        DAFFConfig(width=16, num_heads=2),
        DAEMConfig(up_blocks=(0, 1, 2)),
    )
    with torch.no_grad():  # off the zero init, so every DAEM parameter gets a gradient
        for name, parameter in model.decoder.daem_blocks.named_parameters():
            if name.endswith(("scale", "beta", "gamma")):
                parameter.normal_(std=0.1)
    return model


def _decoder_gradients(model, checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    decoder = model.decoder.train()
    decoder.zero_grad(set_to_none=True)
    if checkpointing:
        decoder.enable_gradient_checkpointing()
    else:
        decoder.disable_gradient_checkpointing()
    generator = torch.Generator().manual_seed(3)
    lq = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    with torch.no_grad():
        _, latents, *skips = model.conditioner()(lq)
    torch.manual_seed(5)  # the routing noise of training: the checkpoint replays the RNG state
    output = decoder(latents, tuple(skips))
    loss = output.sample.square().mean() + output.aux_loss
    loss.backward()
    return loss.detach(), {
        name: p.grad.clone() for name, p in decoder.named_parameters() if p.grad is not None
    }


def test_decoder_checkpointing_gives_the_same_loss_and_gradients(model) -> None:
    plain_loss, plain = _decoder_gradients(model, checkpointing=False)
    checkpointed_loss, checkpointed = _decoder_gradients(model, checkpointing=True)
    assert model.decoder.decoder.gradient_checkpointing
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    assert plain.keys() == checkpointed.keys() and any("daem_blocks" in name for name in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
    model.decoder.disable_gradient_checkpointing()


def test_the_loop_switch_reaches_the_unet_vae_and_decoder(model) -> None:
    objective = torch.nn.ModuleDict({"unet": model.unet, "vae": model.prior.vae, "decoder": model.decoder})
    switched = enable_gradient_checkpointing(objective)
    assert sorted(switched) == ["AutoencoderKL", "DAEMDecoder", "UNet2DConditionModel"]
    assert model.unet.down_blocks[1].gradient_checkpointing and model.decoder.decoder.gradient_checkpointing
    for module in (model.unet, model.prior.vae, model.decoder):
        module.disable_gradient_checkpointing()


def test_upcast_decodes_in_fp32_under_autocast(model) -> None:
    """fp16 with a force_upcast VAE (SDXL) keeps the decoder path in fp32 (bf16 autocast stands in on CPU)."""
    generator = torch.Generator().manual_seed(1)
    lq = torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1
    with torch.no_grad():
        _, latents, *_ = model.conditioner()(lq)
    batch = LatentBatch(lq=lq, gt=lq.clone(), gt_latents=latents, prompt_ids=torch.zeros(1, dtype=torch.long))
    seen = {}
    hook = model.decoder.decoder.conv_out.register_forward_hook(
        lambda module, inputs, output: seen.setdefault("dtype", []).append(output.dtype)
    )
    skip_encoder = lambda images: model.conditioner()(images)[2:]  # noqa: E731
    try:
        for upcast in (False, True):
            objective = DecoderObjective(model.decoder.eval(), skip_encoder, 0.2, 0.01, upcast=upcast)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                objective(batch, torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert seen["dtype"] == [torch.bfloat16, torch.float32]


def test_accelerate_configs_parse_and_cover_1_2_8_gpus_and_two_nodes() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    configs = {
        path.name: load_config_from_file(str(path))
        for path in (REPO_ROOT / "configs/accelerate").glob("*.yaml")
    }
    shapes = sorted((config.num_machines, config.num_processes) for config in configs.values())
    assert shapes == [(1, 1), (1, 2), (1, 2), (1, 8), (1, 8), (2, 16)], shapes
    assert {config.mixed_precision for config in configs.values()} == {"bf16"}
    fsdp = sorted(name for name, config in configs.items() if config.distributed_type == "FSDP")
    assert fsdp == ["2gpu_fsdp.yaml", "8gpu_fsdp.yaml"], fsdp
    preset = yaml.safe_load((REPO_ROOT / "presets/sdxl.yaml").read_text())
    assert preset["train"]["gradient_checkpointing"] is True


@pytest.mark.parametrize("name", ["2gpu_fsdp.yaml", "8gpu_fsdp.yaml"])
def test_fsdp_configs_give_accelerate_an_fsdp2_full_shard_plugin(name: str, monkeypatch) -> None:
    """What ``accelerate launch --config_file`` hands the processes builds an FSDP2 plugin (no GPU needed)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    config = str(REPO_ROOT / "configs/accelerate" / name)
    args = launch_command_parser().parse_args(["--config_file", config, "-m", "stages.stage1b"])
    _validate_launch_command(args)  # fills args from the config file, as `accelerate launch` does
    environment = prepare_multi_gpu_env(args)
    assert environment["ACCELERATE_USE_FSDP"] == "true"
    for key, value in environment.items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.cpu_offload.__class__.__name__ == "OffloadPolicy"  # no CPU offload
    assert not plugin.cpu_ram_efficient_loading and not plugin.activation_checkpointing
