"""Training of the ``tiny`` prior: the VAE, then the text-conditioned UNet on the VAE's clean latents."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from unildiff.training.batches import ImageBatches, LatentBatches, PromptTable
from unildiff.training.config import PriorTrainConfig, TrainConfig
from unildiff.training.digest import digest_strings, digest_tensors
from unildiff.training.latents import TrainingPairs, build_latent_cache, encode_latents
from unildiff.training.loop import ParamGroup, TrainingResult, TrainingRun, train
from unildiff.training.objectives import PriorDenoisingObjective, VAEObjective, noise_schedule


def train_tiny_prior(
    prior: Any,
    pairs: TrainingPairs,
    config: PriorTrainConfig,
    train_config: TrainConfig,
    checkpoint_dir: Path,
    live_dir: Path | None,
    accelerator: Any,
) -> list[TrainingResult]:
    """Train ``prior.vae`` (reconstruction + KL), then ``prior.unet`` (ε-prediction), in place.

    The text encoders stay frozen (their prompt embeddings are computed once). Both phases resume from
    ``checkpoint_dir/vae`` and ``checkpoint_dir/unet``.

    Args:
        prior: ``PriorComponents`` from ``build_tiny_prior``.
        pairs: Training pairs; only ``gt`` [-1, 1] (N, 3, S, S) and the prompts are used.
        config: Step counts and learning rates.
        train_config: Shared loop settings.
        checkpoint_dir: ``checkpoints/prior``.
        live_dir: ``dvclive/prior`` (curves in ``vae/`` and ``unet/``) or ``None``.
        accelerator: The process's ``accelerate.Accelerator``.

    Returns:
        The results of the VAE and the UNet phases.
    """
    for module in (prior.vae, prior.unet, prior.text_encoder, prior.text_encoder_2):
        module.requires_grad_(False).eval()
    data_key = {
        "prior_train": dataclasses.asdict(config),
        "data": digest_tensors(pairs.gt) + digest_strings(*pairs.prompts),
    }
    prior.vae.requires_grad_(True).train()
    vae_run = TrainingRun(
        stage="prior_vae",
        objective=VAEObjective(prior.vae, config.kl_weight),
        param_groups=[ParamGroup("vae", tuple(prior.vae.parameters()), config.vae_lr)],
        batches=ImageBatches(pairs),
        steps=config.vae_steps,
        batch_size=config.batch_size,
        checkpoint_dir=checkpoint_dir / "vae",
        live_dir=live_dir / "vae" if live_dir else None,
        fingerprint=data_key,
    )
    vae_result = train(vae_run, train_config, accelerator)
    prior.vae.requires_grad_(False).eval()
    calibrate_scaling_factor(prior.vae, pairs.gt, train_config.encode_batch_size)
    cache = build_latent_cache(pairs, prior.vae, train_config.encode_batch_size)
    table = PromptTable.from_prior(prior, pairs.prompts)
    prior.unet.requires_grad_(True).train()
    objective = PriorDenoisingObjective(
        prior.unet, noise_schedule(prior.scheduler), table, train_config.prompt_dropout
    )
    unet_run = TrainingRun(
        stage="prior_unet",
        objective=objective,
        param_groups=[ParamGroup("unet", tuple(prior.unet.parameters()), config.unet_lr)],
        batches=LatentBatches(cache, table),
        steps=config.unet_steps,
        batch_size=config.batch_size,
        checkpoint_dir=checkpoint_dir / "unet",
        live_dir=live_dir / "unet" if live_dir else None,
        fingerprint={**data_key, "vae": digest_tensors(*prior.vae.state_dict().values())},
    )
    unet_result = train(unet_run, train_config, accelerator)
    prior.unet.requires_grad_(False).eval()
    return [vae_result, unet_result]


def calibrate_scaling_factor(vae: Any, images: Any, batch_size: int) -> float:
    """Set ``vae.config.scaling_factor`` to 1 / std of the unscaled latents of ``images``.

    The diffusion noise schedule assumes unit-variance latents; Stable Diffusion chose its factor the
    same way (Rombach et al. 2022, §4.3.2). A freshly trained VAE has its own latent scale, so SDXL's
    value would leave the latents' signal-to-noise ratio off at every timestep.

    Args:
        vae: The trained ``AutoencoderKL`` (eval mode).
        images: Clean training images, [-1, 1], (N, 3, H, W).
        batch_size: Images per encoder pass.

    Returns:
        The new scaling factor.
    """
    with torch.no_grad():
        unscaled = encode_latents(vae, images, batch_size) / vae.config.scaling_factor
    factor = float(1.0 / unscaled.std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=factor)
    return factor
