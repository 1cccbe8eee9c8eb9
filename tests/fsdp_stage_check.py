"""Run under ``accelerate launch`` with the CPU FSDP config (``tests/test_training_fsdp_stages.py``): builds
the stage-1b and stage-2 objectives with the stages' own functions in a workspace, shards them as the loop
does and checks, on every rank, that sharding changed nothing but the storage:

- every parameter belongs to exactly one FSDP unit (the frozen VAE that stage 2's skip encoder and its
  one-step latents both hold is one unit, sharded once, the same parameters from both parents);
- one forward and backward on a batch per rank gives the unsharded objective's loss and the
  rank-averaged unsharded gradients; frozen parameters get no gradient and keep their values;
- the optimizer holds every trained shard once, empty shards included;
- the weights a stage delivers (``full_weight_modules`` → ``save_pretrained`` → ``from_pretrained``) equal
  the sharded parameters: each rank's shard is its chunk of the loaded tensor.

Argument: the workspace. Writes ``fsdp_check.json`` there (rank 0)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

root = Path(sys.argv[1])
os.chdir(root)

from torch.distributed.fsdp import FSDPModule  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from unildiff.models.bundle import load_stage1_model  # noqa: E402
from unildiff.models.config import DAEMConfig  # noqa: E402
from unildiff.models.daff import DAFF  # noqa: E402
from unildiff.models.decoder import DAEMDecoder  # noqa: E402
from unildiff.models.lq_encoder import LQEncoder  # noqa: E402
from unildiff.models.prior import load_prior  # noqa: E402
from unildiff.params import load_section, read_params  # noqa: E402
from unildiff.start import StartConfig  # noqa: E402
from unildiff.training import sharding  # noqa: E402
from unildiff.training.config import Stage2Config, TrainConfig  # noqa: E402
from unildiff.training.latent_shards import ShardedLatentCache  # noqa: E402
from unildiff.training.loop import make_accelerator  # noqa: E402
from unildiff.training.stage1 import stage1_objective  # noqa: E402
from unildiff.training.stage2 import stage2_objective  # noqa: E402

params = read_params()
train_config = load_section("train", TrainConfig, params)
start = load_section("start", StartConfig, params)
accelerator = make_accelerator(train_config)
assert sharding.is_sharded(accelerator), "the CPU FSDP config did not give a sharded accelerator"
rank, world = accelerator.process_index, accelerator.num_processes
cache = ShardedLatentCache("models/cache/latents")


def stage1b():
    prior = load_prior("models/prior")
    daff = DAFF.from_pretrained("models/stage1a/daff", use_safetensors=True)
    lq_encoder = LQEncoder.from_vae(prior.vae, num_scales=daff.config.lq_scales)  # as stage 1b does
    for module in (prior.vae, prior.text_encoder, prior.text_encoder_2):
        module.requires_grad_(False).eval()
    for module in (lq_encoder, daff, prior.unet):
        module.requires_grad_(True).train()
    objective, batches = stage1_objective(prior, lq_encoder, daff, cache, start, train_config)
    return objective, batches, {"lq_encoder": lq_encoder, "daff": daff, "unet": prior.unet}, prior.vae


def stage2():
    prior = load_prior("models/prior")
    config = load_section("stage2", Stage2Config, params)
    assert config.latent_source == "denoised"
    for module in (prior.vae, prior.unet, prior.text_encoder, prior.text_encoder_2):
        module.requires_grad_(False).eval()
    decoder = DAEMDecoder.from_vae(prior.vae, load_section("daem", DAEMConfig, params), seed=0)
    decoder.requires_grad_(True).train()
    stage1 = load_stage1_model(prior, "models/stage1b")
    objective, batches = stage2_objective(
        prior, decoder, cache, config, train_config, stage1, start.timestep, start.noise
    )
    assert objective.skip_encoder.vae is objective.latents.vae is prior.vae
    return objective, batches, {"decoder": decoder}, prior.vae


def owners(objective: torch.nn.Module) -> dict[int, int]:
    """id(sharded parameter) -> how many FSDP units manage it."""
    counts: dict[int, int] = {}
    units = {id(module): module for module in objective.modules() if isinstance(module, FSDPModule)}
    for unit in units.values():
        for group in unit._get_fsdp_state()._fsdp_param_groups:
            for fsdp_param in group.fsdp_params:
                counts[id(fsdp_param.sharded_param)] = counts.get(id(fsdp_param.sharded_param), 0) + 1
    return counts


def check(name: str, build) -> dict:
    generator_seed = 1234 + rank
    reference, batches, _, reference_vae = build()
    objective, _, trained, vae = build()
    already = [n for n, p in objective.named_parameters() if isinstance(p, DTensor)]
    assert not already, already[:5]
    frozen_before = {n: p.detach().clone() for n, p in objective.named_parameters() if not p.requires_grad}
    trainable = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    units = sharding.shard_objective(accelerator, objective, optimizer)
    groups = [list(group["params"]) for group in optimizer.param_groups]
    wrapped, optimizer = accelerator.prepare(objective, optimizer)
    sharding.restore_optimizer_parameters(optimizer.optimizer, groups)  # as the loop does
    in_optimizer = [id(p) for group in optimizer.optimizer.param_groups for p in group["params"]]
    # each trained shard once (accelerate's data_ptr mapping alone merges the empty shards: DAEM's
    # (1, C, 1, 1) parameters have no rows on rank 1)
    assert sorted(in_optimizer) == sorted(id(p) for p in objective.parameters() if p.requires_grad)
    parameters = dict(objective.named_parameters())
    assert all(isinstance(p, DTensor) for p in parameters.values()), "a parameter is not sharded"
    counts = owners(objective)
    assert sorted(counts) == sorted(id(p) for p in parameters.values()), "a parameter has no FSDP unit"
    assert set(counts.values()) == {1}, f"a parameter is sharded by several units: {counts}"
    assert isinstance(vae, FSDPModule), "the frozen VAE is not a unit of its own"
    if name == "stage2":
        shared = [id(p) for p in objective.skip_encoder.vae.parameters()]
        assert shared == [id(p) for p in objective.latents.vae.parameters()]
        assert units.count("skip_encoder.vae") + units.count("latents.vae") == 1, units

    batch = batches(torch.tensor([2 * rank, 2 * rank + 1]))
    expected = reference(batch, torch.Generator().manual_seed(generator_seed))
    expected.loss.backward()
    output = wrapped(batch, torch.Generator().manual_seed(generator_seed))
    output.loss.backward()  # not accelerator.backward, which divides by train.gradient_accumulation_steps
    loss_difference = abs(output.loss.item() - expected.loss.item())
    assert loss_difference < 1e-5, (name, output.loss.item(), expected.loss.item())
    worst = 0.0
    bad = []
    for parameter_name, reference_parameter in reference.named_parameters():
        parameter = parameters[parameter_name]
        if not reference_parameter.requires_grad:
            assert parameter.grad is None, f"frozen {parameter_name} got a gradient"
            continue
        mean = reference_parameter.grad.clone()
        dist.all_reduce(mean)
        mean /= world
        got = parameter.grad.full_tensor()
        difference = (got - mean).abs().max().item()
        worst = max(worst, difference / max(mean.abs().max().item(), 1e-3))
        if difference > 1e-5 * mean.abs().max().item() + 1e-6:  # float summation order
            bad.append((parameter_name, difference, mean.abs().max().item()))
    assert not bad, bad
    optimizer.step()
    for parameter_name, before in frozen_before.items():
        assert torch.equal(parameters[parameter_name].full_tensor(), before), f"frozen {parameter_name} moved"
    reference_vae_state = reference_vae.state_dict()
    for key, value in vae.state_dict().items():
        assert torch.equal(value.full_tensor(), reference_vae_state[key]), key

    folder = root / "fsdp_check" / name
    gathered = sharding.full_weight_modules(accelerator, trained)
    if accelerator.is_main_process:
        for module_name, module in gathered.items():
            module.save_pretrained(folder / module_name, safe_serialization=True)
    accelerator.wait_for_everyone()
    compared = 0
    for module_name, module in trained.items():
        loaded = type(module).from_pretrained(folder / module_name, use_safetensors=True).state_dict()
        for key, parameter in module.named_parameters():
            chunks = torch.chunk(loaded[key], world, dim=0)
            local = parameter.to_local()
            mine = chunks[rank] if rank < len(chunks) else loaded[key][:0]
            assert torch.equal(local, mine), f"{module_name}.{key}: rank {rank}'s shard differs"
            assert torch.equal(parameter.full_tensor(), loaded[key]), f"{module_name}.{key}"
            compared += 1
    return {"units": units, "loss_difference": loss_difference, "worst_relative_gradient_difference": worst,
            "saved_parameters_compared": compared, "parameters": len(parameters)}


results = {name: check(name, build) for name, build in (("stage1b", stage1b), ("stage2", stage2))}
if accelerator.is_main_process:
    (root / "fsdp_check.json").write_text(json.dumps(results, indent=1))
accelerator.wait_for_everyone()
