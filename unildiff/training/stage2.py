"""Stage 2 of UniLDiff (supplement §2.2): tune the VAE decoder and its DAEM blocks (eq. 10)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from unildiff.errors import ConfigError
from unildiff.training.batches import LatentBatches, PromptTable
from unildiff.training.config import Stage2Config, TrainConfig, prompt_fingerprint
from unildiff.training.latents import LatentSource
from unildiff.training.loop import ParamGroup, TrainingResult, TrainingRun, train
from unildiff.training.objectives import DecoderObjective, OneStepLatents, noise_schedule


class SkipEncoder(torch.nn.Module):
    """The frozen VAE encoder's multi-scale features of the lq image (:func:`encode_with_skips`).

    Args:
        vae: The prior's frozen ``AutoencoderKL``.
    """

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, lq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Skips of lq [-1, 1], (B, 3, H, W): one tensor per VAE encoder level."""
        from unildiff.models.conditioner import encode_with_skips
        from unildiff.training.sharding import gathered

        with gathered(self.vae):  # FSDP: the VAE is used through its parts, not its forward
            return encode_with_skips(self.vae, lq)[1]


def stage2_param_groups(decoder: torch.nn.Module, config: Stage2Config) -> list[ParamGroup]:
    """The VAE decoder's weights at ``lr · decoder_lr_scale`` and the DAEM blocks at ``lr`` (none without
    DAEM blocks: the ``daem.up_blocks=[]`` ablation trains the decoder alone, at the same rate)."""
    daem = tuple(decoder.daem_blocks.parameters())
    daem_ids = {id(parameter) for parameter in daem}
    rest = tuple(parameter for parameter in decoder.parameters() if id(parameter) not in daem_ids)
    groups = [ParamGroup("decoder", rest, config.lr * config.decoder_lr_scale)]
    if daem:
        groups.append(ParamGroup("daem", daem, config.lr))
    return groups


def stage2_objective(
    prior: Any,
    decoder: torch.nn.Module,
    cache: LatentSource,
    config: Stage2Config,
    train_config: TrainConfig,
    stage1: Any | None = None,
    start_timestep: int | None = None,
    start_noise: float = 1.0,
) -> tuple[DecoderObjective, LatentBatches]:
    """The objective stage 2 trains (eq. 10: the DAEM decoder, the frozen VAE encoder's LQ skips and, for
    ``denoised`` latents, the frozen stage-1b denoiser reading the same VAE) and its batch source.
    Arguments as :func:`train_stage2`; the frozen parts are frozen here, ``decoder`` is left as it is."""
    skip_encoder = SkipEncoder(prior.vae).requires_grad_(False).eval()
    latents = None
    if config.latent_source == "denoised":
        if stage1 is None:
            raise ConfigError("stage2.latent_source=denoised needs the stage-1b model")
        for module in (stage1.lq_encoder, stage1.daff, stage1.unet):
            module.requires_grad_(False).eval()
        table = PromptTable.from_prior(prior, cache.prompts)
        latents = OneStepLatents(
            stage1.denoiser(),
            stage1.lq_encoder,
            noise_schedule(prior.scheduler),
            table,
            vae=prior.vae,
            start_timestep=start_timestep,
            start_noise=start_noise,
            prompt_free=not train_config.prompts,
        )
        batches = LatentBatches(cache, table)
    else:
        batches = LatentBatches(cache, None)
    # fp16 overflows in the SDXL VAE decoder (its config says force_upcast): that path runs in fp32.
    upcast = train_config.mixed_precision == "fp16" and bool(prior.vae.config.get("force_upcast", False))
    objective = DecoderObjective(
        decoder, skip_encoder, config.lambda1, config.lambda2, config.crop_size, latents, upcast=upcast
    )
    return objective, batches


def train_stage2(
    prior: Any,
    decoder: torch.nn.Module,
    cache: LatentSource,
    config: Stage2Config,
    train_config: TrainConfig,
    checkpoint_dir: Path,
    live_dir: Path | None,
    accelerator: Any,
    inputs_key: str,
    stage1: Any | None = None,
    start_timestep: int | None = None,
    start_noise: float = 1.0,
) -> TrainingResult:
    """Train ``decoder`` (``DAEMDecoder.from_vae(prior.vae, ...)``: decoder + DAEM) in place.

    Latents are the cached ``encode(gt)``; skips come from ``encode(lq)`` with the frozen VAE encoder.
    Loss L1 + λ1·(1 − SSIM) + λ2·L_aux (eq. 10).

    Args:
        prior: ``PriorComponents``; its VAE stays frozen.
        decoder: The ``DAEMDecoder`` to train.
        cache: Cached clean latents with lq/gt [-1, 1] (N, 3, S, S).
        config: Steps, lr, λ1, λ2.
        train_config: Shared loop settings.
        checkpoint_dir: ``checkpoints/stage2``.
        live_dir: ``dvclive/stage2`` or ``None``.
        accelerator: The process's ``accelerate.Accelerator``.
        inputs_key: Digest of the prior and the cache (and stage 1b when it is used).
        stage1: The trained ``UniLDiffModel`` whose denoiser restores the stage-2 inputs when
            ``config.latent_source`` is ``denoised``; ``None`` for ``clean``.
        start_timestep: Where those one-step restorations start: ``None`` = pure noise, an int = the LQ
            latent noised to that timestep (stage 1b's ``lq_start_timestep`` when it trained LQ starts).
        start_noise: Scale of the noise of that LQ start (stage 1b's ``lq_start_noise``).
    """
    for module in (prior.vae, prior.unet, prior.text_encoder, prior.text_encoder_2):
        module.requires_grad_(False).eval()
    decoder.requires_grad_(True).train()
    objective, batches = stage2_objective(
        prior, decoder, cache, config, train_config, stage1, start_timestep, start_noise
    )
    settings = {key: value for key, value in decoder.config.items() if not key.startswith("_")}
    run = TrainingRun(
        stage="stage2",
        objective=objective,
        param_groups=stage2_param_groups(decoder, config),
        batches=batches,
        steps=config.steps,
        batch_size=config.batch_size,
        checkpoint_dir=checkpoint_dir,
        live_dir=live_dir,
        fingerprint={
            "stage2": dataclasses.asdict(config),
            "decoder": settings,
            "inputs": inputs_key,
            "latent_start": [start_timestep, start_noise],
            **prompt_fingerprint(train_config),
        },
        lr_schedule="cosine",
        weight_decay=config.weight_decay,
    )
    result = train(run, train_config, accelerator)
    decoder.requires_grad_(False).eval()
    return result
