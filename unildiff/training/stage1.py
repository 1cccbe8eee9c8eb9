"""Stage 1 of UniLDiff (supplement §2.2): DAFF pre-training (1a) and joint fine-tuning (1b), eq. 9."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from unildiff.errors import ConfigError
from unildiff.start import StartConfig
from unildiff.training.batches import LatentBatches, PromptTable
from unildiff.training.config import Stage1aConfig, Stage1bConfig, TrainConfig, prompt_fingerprint
from unildiff.training.latents import LatentSource
from unildiff.training.loop import ParamGroup, TrainingResult, TrainingRun, train
from unildiff.training.objectives import RestorationDenoisingObjective, noise_schedule


def _settings(module: torch.nn.Module) -> dict[str, Any]:
    """A module's ``register_to_config`` settings (without diffusers' private ``_name_or_path`` etc.)."""
    return {key: value for key, value in module.config.items() if not key.startswith("_")}


def _freeze(*modules: torch.nn.Module) -> None:
    for module in modules:
        module.requires_grad_(False).eval()


def stage1_objective(
    prior: Any,
    lq_encoder: torch.nn.Module,
    daff: torch.nn.Module,
    cache: LatentSource,
    start: StartConfig,
    train_config: TrainConfig,
) -> tuple[RestorationDenoisingObjective, LatentBatches]:
    """The objective stages 1a and 1b train (eq. 9: the UNet with DAFF at ``conv_in``, the LQ encoder, the
    frozen VAE for LQ starts) and its batch source; which parameters train is set by the caller."""
    from unildiff.models.denoiser import UniLDiffDenoiser

    scheduler = noise_schedule(prior.scheduler)
    if start.trains_lq_start and start.timestep >= scheduler.config.num_train_timesteps:
        raise ConfigError(
            f"start.timestep must be < {scheduler.config.num_train_timesteps}, got {start.timestep}"
        )
    table = PromptTable.from_prior(prior, cache.prompts)
    objective = RestorationDenoisingObjective(
        UniLDiffDenoiser(prior.unet, daff),
        lq_encoder,
        scheduler,
        table,
        train_config.restoration_prompt_dropout,
        train_config.crop_size,
        vae=prior.vae,
        lq_start_probability=start.training_fraction,
        lq_start_timestep=start.timestep,
        lq_start_noise=start.noise,
    )
    return objective, LatentBatches(cache, table)


def train_stage1a(
    prior: Any,
    lq_encoder: torch.nn.Module,
    daff: torch.nn.Module,
    cache: LatentSource,
    config: Stage1aConfig,
    start: StartConfig,
    train_config: TrainConfig,
    checkpoint_dir: Path,
    live_dir: Path | None,
    accelerator: Any,
    inputs_key: str,
) -> TrainingResult:
    """Stage 1a: train only ``daff`` (UNet, VAE, text encoders and LQ encoder frozen); AdamW, constant lr.

    Args:
        prior: ``PriorComponents`` (from ``load_prior('models/prior')``).
        lq_encoder: ``LQEncoder.from_vae(prior.vae)`` (frozen here).
        daff: DAFF to train, in place.
        cache: Cached clean latents and lq [-1, 1] (N, 3, S, S) images.
        config: Steps, lr, batch size.
        start: The start the sampler will take (params ``start``): ``training_fraction`` of each batch
            is drawn there instead of at a random timestep.
        train_config: Shared loop settings.
        checkpoint_dir: ``checkpoints/stage1a``.
        live_dir: ``dvclive/stage1a`` or ``None``.
        accelerator: The process's ``accelerate.Accelerator``.
        inputs_key: Digest of the prior and the cache (a changed input refuses an old state).
    """
    _freeze(prior.vae, prior.unet, prior.text_encoder, prior.text_encoder_2, lq_encoder)
    daff.requires_grad_(True).train()
    objective, batches = stage1_objective(prior, lq_encoder, daff, cache, start, train_config)
    run = TrainingRun(
        stage="stage1a",
        objective=objective,
        param_groups=[ParamGroup("daff", tuple(daff.parameters()), config.lr)],
        batches=batches,
        steps=config.steps,
        batch_size=config.batch_size,
        checkpoint_dir=checkpoint_dir,
        live_dir=live_dir,
        fingerprint={
            "stage1a": dataclasses.asdict(config),
            "start": dataclasses.asdict(start),
            "daff": _settings(daff),
            "inputs": inputs_key,
            **prompt_fingerprint(train_config),
        },
        weight_decay=config.weight_decay,
    )
    result = train(run, train_config, accelerator)
    objective.denoiser.remove_hook()
    _freeze(daff)
    return result


def train_stage1b(
    prior: Any,
    lq_encoder: torch.nn.Module,
    daff: torch.nn.Module,
    cache: LatentSource,
    config: Stage1bConfig,
    start: StartConfig,
    train_config: TrainConfig,
    checkpoint_dir: Path,
    live_dir: Path | None,
    accelerator: Any,
    inputs_key: str,
) -> TrainingResult:
    """Stage 1b: train the LQ encoder (``lr_lq_encoder``) and DAFF + UNet (``lr_denoiser``), cosine decay.

    The VAE and the text encoders stay frozen. With ``daff.config.fusion`` off (the ablation without DAFF)
    only the UNet trains. Arguments as :func:`train_stage1a` (``daff`` comes from 1a;
    ``checkpoint_dir`` is ``checkpoints/stage1b``); ``lq_encoder``, ``daff`` and ``prior.unet`` are
    updated in place.
    """
    _freeze(prior.vae, prior.text_encoder, prior.text_encoder_2)
    for module in (lq_encoder, daff, prior.unet):
        module.requires_grad_(True).train()
    objective, batches = stage1_objective(prior, lq_encoder, daff, cache, start, train_config)
    if daff.config.fusion:
        groups = [
            ParamGroup("lq_encoder", tuple(lq_encoder.parameters()), config.lr_lq_encoder),
            ParamGroup("denoiser", (*daff.parameters(), *prior.unet.parameters()), config.lr_denoiser),
        ]
    else:  # the ablation without DAFF: f^LQ is unused, only the UNet learns
        groups = [ParamGroup("denoiser", tuple(prior.unet.parameters()), config.lr_denoiser)]
    run = TrainingRun(
        stage="stage1b",
        objective=objective,
        param_groups=groups,
        batches=batches,
        steps=config.steps,
        batch_size=config.batch_size,
        checkpoint_dir=checkpoint_dir,
        live_dir=live_dir,
        fingerprint={
            "stage1b": dataclasses.asdict(config),
            "start": dataclasses.asdict(start),
            "daff": _settings(daff),
            "inputs": inputs_key,
            **prompt_fingerprint(train_config),
        },
        lr_schedule="cosine",
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
    )
    result = train(run, train_config, accelerator)
    objective.denoiser.remove_hook()
    _freeze(lq_encoder, daff, prior.unet)
    return result
