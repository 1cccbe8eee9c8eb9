"""Training of the ``tiny`` prior: the VAE, then the text-conditioned UNet on the VAE's clean latents."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from unildiff.errors import ConfigError
from unildiff.training.batches import ImageBatches, LatentBatches, PromptTable
from unildiff.training.config import PriorTrainConfig, TrainConfig
from unildiff.training.digest import digest_strings, digest_tensors
from unildiff.training.latents import TrainingPairs, build_latent_cache, encode_latents
from unildiff.training.loop import ParamGroup, TrainingResult, TrainingRun, train
from unildiff.training.objectives import PriorDenoisingObjective, VAEObjective, noise_schedule
from unildiff.training.sharding import is_sharded


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

    Raises:
        ConfigError: Under FSDP: the trained VAE is used again in this process (scaling factor, latent
            cache, the UNet phase, the round trip), which sharded weights do not allow.
    """
    if is_sharded(accelerator):
        raise ConfigError(
            "train.accelerate_config: the tiny prior does not train under FSDP (its VAE is used unsharded "
            "after its phase); use a DDP config or none"
        )
    for module in (prior.vae, prior.unet, prior.text_encoder, prior.text_encoder_2):
        module.requires_grad_(False).eval()
    data_key = {
        "prior_train": dataclasses.asdict(config),
        "data": digest_tensors(pairs.gt) + digest_strings(*pairs.prompts),
    }
    configure_scheduler(prior, config)
    prior.vae.requires_grad_(True).train()
    vae_run = TrainingRun(
        stage="prior_vae",
        objective=VAEObjective(
            prior.vae,
            config.kl_weight,
            config.vae_crop_size or train_config.crop_size,
            sample_posterior=config.vae_sample_posterior,
        ),
        param_groups=[ParamGroup("vae", tuple(prior.vae.parameters()), config.vae_lr)],
        batches=ImageBatches(pairs),
        steps=config.vae_steps,
        batch_size=config.vae_batch_size,
        checkpoint_dir=checkpoint_dir / "vae",
        live_dir=live_dir / "vae" if live_dir else None,
        fingerprint=data_key,
        lr_schedule="cosine",
        adam_beta2=config.vae_adam_beta2,
    )
    vae_result = train(vae_run, train_config, accelerator)
    prior.vae.requires_grad_(False).eval()
    calibrate_scaling_factor(prior.vae, pairs.gt, train_config.encode_batch_size)
    cache = build_latent_cache(pairs, prior.vae, train_config.encode_batch_size)
    table = PromptTable.from_prior(prior, pairs.prompts)
    prior.unet.requires_grad_(True).train()
    objective = PriorDenoisingObjective(
        prior.unet,
        noise_schedule(prior.scheduler),
        table,
        train_config.prompt_dropout,
        train_config.crop_size,
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
        lr_schedule="cosine",
    )
    unet_result = train(unet_run, train_config, accelerator)
    prior.unet.requires_grad_(False).eval()
    return [vae_result, unet_result]


def configure_scheduler(prior: Any, config: PriorTrainConfig) -> None:
    """Give the tiny prior the scheduler its UNet is trained for (prediction type, terminal SNR, spacing).

    The scheduler config is saved with the prior, so every later stage and the pipeline follow it.
    """
    prior.scheduler = type(prior.scheduler).from_config(
        prior.scheduler.config,
        prediction_type=config.prediction_type,
        rescale_betas_zero_snr=config.zero_terminal_snr,
        timestep_spacing=config.timestep_spacing,
    )


@torch.no_grad()
def round_trip_psnr(vae: Any, images: torch.Tensor, batch_size: int) -> dict[str, float]:
    """PSNR (dB, on [0, 1]) of ``vae.decode(vae.encode(x).mode())`` against ``x``: what the VAE caps.

    Args:
        vae: The trained ``AutoencoderKL`` (eval mode).
        images: Clean images, [-1, 1], (N, 3, H, W), H and W multiples of the VAE factor.
        batch_size: Images per pass.

    Returns:
        ``{"mean": …, "min": …}`` over the images.
    """
    scores = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        decoded = vae.decode(vae.encode(batch).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((decoded - batch) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        scores.extend((10 * torch.log10(1 / mse)).tolist())
    return {"mean": float(sum(scores) / len(scores)), "min": float(min(scores))}


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
