"""Training objectives of every stage: modules holding the networks, returning an ``ObjectiveOutput``.

The noise, timesteps, prompt dropout and DAEM routing noise are drawn in training code, from the
generator the loop passes in (seeded per step); the networks themselves never sample (the DAEM decoder
draws its routers' noise only from the generator the stage-2 objective hands it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unildiff.errors import ConfigError
from unildiff.training.batches import (
    ImageBatch,
    LatentBatch,
    PromptTable,
    random_crop_flip,
    random_image_crop_flip,
)
from unildiff.training.loop import ObjectiveOutput
from unildiff.training.ssim import ssim


def noise_schedule(prior_scheduler: object) -> object:
    """The training noise schedule: a diffusers ``DDPMScheduler`` from the prior scheduler's config."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(prior_scheduler.config)


def add_noise(
    scheduler: object, latents: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Draw ε ~ N(0, I) and t ~ U{0..T-1} and return ``(x_t, ε, t)`` via ``scheduler.add_noise``."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    timesteps = torch.randint(
        0,
        scheduler.config.num_train_timesteps,
        (latents.shape[0],),
        generator=generator,
        device=latents.device,
    )
    return scheduler.add_noise(latents, noise, timesteps), noise, timesteps


def denoising_target(
    scheduler: object, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the denoiser predicts, by ``scheduler.config.prediction_type``: ε (``epsilon``, the paper's),
    v = α_t ε − σ_t x0 (``v_prediction``) or x0 (``sample``)."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if prediction_type == "sample":
        return latents
    raise ConfigError(f"unsupported scheduler prediction_type {prediction_type!r}")


def target_for_clean(
    scheduler: object, noisy: torch.Tensor, clean: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The prediction whose clean latent (:func:`predict_clean_latent`) at ``timesteps`` is ``clean``.

    For an ``x_t`` noised from ``clean`` itself this is :func:`denoising_target`; for an ``x_t`` noised
    from the LQ latent (``lq_start_probability``) it is the target that maps that start onto the gt.
    v = (√ᾱ x_t − x0) / √(1−ᾱ), ε = (x_t − √ᾱ x0) / √(1−ᾱ), x0 itself for ``sample``.
    """
    alphas = scheduler.alphas_cumprod.to(noisy.device, torch.float32)[timesteps].reshape(-1, 1, 1, 1)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "v_prediction":
        return (alphas.sqrt() * noisy - clean) / (1 - alphas).sqrt()
    if prediction_type == "epsilon":
        return (noisy - alphas.sqrt() * clean) / (1 - alphas).sqrt()
    if prediction_type == "sample":
        return clean
    raise ConfigError(f"unsupported scheduler prediction_type {prediction_type!r}")


def lq_latents(vae: torch.nn.Module, lq: torch.Tensor) -> torch.Tensor:
    """The frozen VAE's scaled LQ latent, as the pipeline's LQ start uses it (no gradient).

    Args:
        vae: The prior's frozen ``AutoencoderKL``.
        lq: [-1, 1], (B, 3, H, W).

    Returns:
        (B, latent_channels, H/f, W/f), scaled by ``vae.config.scaling_factor``.
    """
    from unildiff.models.conditioner import encode_with_skips
    from unildiff.training.sharding import gathered

    with torch.no_grad(), gathered(vae):  # FSDP: the VAE is used through its parts, not its forward
        return encode_with_skips(vae, lq)[0]


def _time_ids(images: torch.Tensor) -> torch.Tensor:
    from unildiff.models.text import make_time_ids

    return make_time_ids(images.shape[-2], images.shape[-1], images.shape[0]).to(images.device)


class VAEObjective(torch.nn.Module):
    """Tiny prior, phase 1: L1 + L2 reconstruction of clean images plus ``kl_weight`` · KL.

    Args:
        vae: The ``AutoencoderKL`` to train.
        kl_weight: Weight of the KL divergence to N(0, I) (summed over latent elements, batch mean).
        crop_size: Side (pixels) of the random crop (and flip) drawn each step; 0 = whole.
        sample_posterior: Decode a posterior sample (the LDM VAE); ``False`` decodes its mode, which
            the pipeline uses anyway and which a CPU-sized budget learns much faster (``tiny``).
    """

    def __init__(
        self,
        vae: torch.nn.Module,
        kl_weight: float,
        crop_size: int = 0,
        sample_posterior: bool = True,
    ) -> None:
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight
        self.crop_size = crop_size
        self.sample_posterior = sample_posterior

    def forward(self, batch: ImageBatch, generator: torch.Generator) -> ObjectiveOutput:
        batch = ImageBatch(gt=random_image_crop_flip(batch.gt, self.crop_size, generator))
        posterior = self.vae.encode(batch.gt).latent_dist
        latents = posterior.sample(generator=generator) if self.sample_posterior else posterior.mode()
        reconstruction = self.vae.decode(latents).sample
        l1 = (reconstruction - batch.gt).abs().mean()
        l2 = F.mse_loss(reconstruction, batch.gt)
        kl = posterior.kl().mean()
        return ObjectiveOutput(
            loss=l1 + l2 + self.kl_weight * kl, terms={"l1": l1.detach(), "kl": kl.detach()}
        )


class PriorDenoisingObjective(torch.nn.Module):
    """Tiny prior, phase 2: the bare UNet on clean latents, ‖target − prediction‖² (LDM), text-conditioned;
    the target follows the scheduler's ``prediction_type`` (:func:`denoising_target`).

    Args:
        unet: The ``UNet2DConditionModel`` to train.
        scheduler: Training noise schedule (:func:`noise_schedule`).
        prompts: Frozen prompt embeddings.
        prompt_dropout: Probability of the empty prompt.
        crop_size: Side (pixels) of the random crop drawn each step (:func:`random_crop_flip`).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: object,
        prompts: PromptTable,
        prompt_dropout: float,
        crop_size: int = 0,
    ):
        super().__init__()
        self.unet, self.scheduler, self.prompts = unet, scheduler, prompts
        self.prompt_dropout, self.crop_size = prompt_dropout, crop_size

    def forward(self, batch: LatentBatch, generator: torch.Generator) -> ObjectiveOutput:
        batch = random_crop_flip(batch, self.crop_size, generator)
        noisy, noise, timesteps = add_noise(self.scheduler, batch.gt_latents, generator)
        target = denoising_target(self.scheduler, batch.gt_latents, noise, timesteps)
        embeds, pooled = self.prompts.lookup(batch.prompt_ids, self.prompt_dropout, generator)
        prediction = self.unet(
            noisy,
            timesteps,
            encoder_hidden_states=embeds,
            return_dict=False,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": _time_ids(batch.gt)},
        )[0]
        loss = F.mse_loss(prediction.float(), target.float())
        return ObjectiveOutput(loss=loss, terms={"mse": loss.detach()})


class RestorationDenoisingObjective(torch.nn.Module):
    """Stages 1a/1b: the UNet + DAFF conditioned on f^LQ, ‖ε − ε̂‖₁ (paper eq. 9); with a ``v_prediction``
    or ``sample`` scheduler (``tiny``) the L1 is on v or x0 instead (:func:`denoising_target`).

    With ``lq_start_probability`` p > 0 (``tiny`` only), a fraction p of each batch starts from the LQ
    latent instead: x_t = √ᾱ z_lq + s·√(1−ᾱ) ε at the fixed ``lq_start_timestep``, s =
    ``lq_start_noise``, with the target that maps x_t onto the gt latent (:func:`target_for_clean`).
    This is the start the sampler takes with ``sampling.start: lq`` and ``start_noise`` s (one step from
    that timestep), so training sees what inference does and the denoiser learns the LQ → gt residual
    from an input that already holds the LQ latent.

    Args:
        denoiser: ``UniLDiffDenoiser(unet, daff)``.
        lq_encoder: ``LQEncoder``; its output f^LQ gets gradients only when its parameters require them.
        scheduler: Training noise schedule (:func:`noise_schedule`).
        prompts: Frozen prompt embeddings.
        prompt_dropout: Probability of the empty prompt (classifier-free guidance, 20% in the paper).
        crop_size: Side (pixels) of the random crop drawn each step (:func:`random_crop_flip`).
        vae: The prior's frozen VAE, which gives the LQ latent of an LQ start; needed when
            ``lq_start_probability`` > 0.
        lq_start_probability: Fraction of each batch started from the noised LQ latent (paper: 0).
        lq_start_timestep: The timestep of an LQ start.
        lq_start_noise: Scale of the noise added to the LQ latent at an LQ start: 1 noises it to the
            timestep (SDEdit); 0 feeds √ᾱ z_lq itself, with no noise (one-step, as OSEDiff does).
    """

    def __init__(
        self,
        denoiser: torch.nn.Module,
        lq_encoder: torch.nn.Module,
        scheduler: object,
        prompts: PromptTable,
        prompt_dropout: float,
        crop_size: int = 0,
        vae: torch.nn.Module | None = None,
        lq_start_probability: float = 0.0,
        lq_start_timestep: int = 0,
        lq_start_noise: float = 1.0,
    ) -> None:
        super().__init__()
        if lq_start_probability > 0 and vae is None:
            raise ConfigError("lq_start_probability > 0 needs the prior's VAE for the LQ latent")
        self.denoiser, self.lq_encoder = denoiser, lq_encoder
        self.scheduler, self.prompts, self.prompt_dropout = scheduler, prompts, prompt_dropout
        self.crop_size = crop_size
        self.vae = vae
        self.lq_start_probability, self.lq_start_timestep = lq_start_probability, lq_start_timestep
        self.lq_start_noise = lq_start_noise

    def forward(self, batch: LatentBatch, generator: torch.Generator) -> ObjectiveOutput:
        batch = random_crop_flip(batch, self.crop_size, generator)
        lq_features = self.lq_encoder(batch.lq)
        noisy, noise, timesteps = add_noise(self.scheduler, batch.gt_latents, generator)
        target = denoising_target(self.scheduler, batch.gt_latents, noise, timesteps)
        if self.lq_start_probability > 0:
            noisy, target, timesteps = self._lq_start(batch, noisy, noise, target, timesteps, generator)
        embeds, pooled = self.prompts.lookup(batch.prompt_ids, self.prompt_dropout, generator)
        prediction = self.denoiser(noisy, timesteps, lq_features, embeds, pooled, _time_ids(batch.gt))
        loss = (target.float() - prediction.float()).abs().mean()
        return ObjectiveOutput(loss=loss, terms={"l1": loss.detach()})

    def _lq_start(self, batch, noisy, noise, target, timesteps, generator) -> tuple[torch.Tensor, ...]:
        """Replace a random ``lq_start_probability`` of the rows by LQ starts at ``lq_start_timestep``."""
        chosen = torch.rand(noisy.shape[0], generator=generator, device=noisy.device)
        chosen = chosen < self.lq_start_probability
        start = torch.full_like(timesteps, self.lq_start_timestep)
        lq_latent = lq_latents(self.vae, batch.lq)
        lq_noisy = self.scheduler.add_noise(lq_latent, self.lq_start_noise * noise, start)
        lq_target = target_for_clean(self.scheduler, lq_noisy, batch.gt_latents, start)
        rows = chosen.reshape(-1, 1, 1, 1)
        return (
            torch.where(rows, lq_noisy, noisy),
            torch.where(rows, lq_target.to(target.dtype), target),
            torch.where(chosen, start, timesteps),
        )


def predict_clean_latent(
    scheduler: object, noisy: torch.Tensor, timesteps: torch.Tensor, prediction: torch.Tensor
) -> torch.Tensor:
    """x0 from a prediction at ``timesteps`` by the scheduler's ``prediction_type`` (DDPM algebra):
    x0 = √ᾱ x_t − √(1−ᾱ) v for v, (x_t − √(1−ᾱ) ε̂) / √ᾱ for ε, the prediction itself for x0."""
    alphas = scheduler.alphas_cumprod.to(noisy.device, torch.float32)[timesteps].reshape(-1, 1, 1, 1)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "v_prediction":
        return alphas.sqrt() * noisy - (1 - alphas).sqrt() * prediction
    if prediction_type == "epsilon":
        return (noisy - (1 - alphas).sqrt() * prediction) / alphas.sqrt().clamp_min(1e-4)
    return prediction


class OneStepLatents(torch.nn.Module):
    """Stage-2 inputs from the frozen stage-1 denoiser (DOD-style, ``stage2.latent_source: denoised``).

    Each batch is restored in one step, with the pair's prompt, from the start the sampler takes: pure
    noise at t = T − 1 (the first timestep of trailing sampling), or, with ``start_timestep``, the LQ
    latent noised to that timestep (``sampling.start: lq``). The decoder then learns to decode what the
    sampler gives it rather than clean latents it never sees at inference.

    Args:
        denoiser: Frozen ``UniLDiffDenoiser`` (stage 1b).
        lq_encoder: Frozen stage-1b LQ encoder.
        scheduler: Training noise schedule (:func:`noise_schedule`).
        prompts: Frozen prompt embeddings.
        vae: The prior's frozen VAE (the LQ latent of an LQ start); needed with ``start_timestep``.
        start_timestep: ``None`` starts from pure noise; an int starts from the LQ latent noised to it.
        start_noise: Scale of the noise added at an LQ start (stage 1b's ``lq_start_noise``).
        prompt_free: Restore with the empty prompt (``train.prompts: false``: a denoiser trained without
            prompts), instead of each pair's prompt.
    """

    def __init__(
        self,
        denoiser: torch.nn.Module,
        lq_encoder: torch.nn.Module,
        scheduler,
        prompts,
        vae: torch.nn.Module | None = None,
        start_timestep: int | None = None,
        start_noise: float = 1.0,
        prompt_free: bool = False,
    ) -> None:
        super().__init__()
        if start_timestep is not None and vae is None:
            raise ConfigError("an LQ start of the stage-2 latents needs the prior's VAE")
        self.denoiser, self.lq_encoder = denoiser, lq_encoder
        self.scheduler, self.prompts = scheduler, prompts
        self.vae, self.start_timestep, self.start_noise = vae, start_timestep, start_noise
        self.prompt_free = prompt_free

    @torch.no_grad()
    def forward(self, batch: LatentBatch, generator: torch.Generator) -> torch.Tensor:
        """Restored scaled latents of ``batch.lq``, shaped like ``batch.gt_latents``."""
        latents = batch.gt_latents
        if self.start_timestep is None:
            start, origin = self.scheduler.config.num_train_timesteps - 1, torch.zeros_like(latents)
            scale = 1.0
        else:
            start, origin = self.start_timestep, lq_latents(self.vae, batch.lq)
            scale = self.start_noise
        timesteps = torch.full((latents.shape[0],), start, dtype=torch.long, device=latents.device)
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        noisy = self.scheduler.add_noise(origin, scale * noise, timesteps)
        prompt_ids = torch.zeros_like(batch.prompt_ids) if self.prompt_free else batch.prompt_ids
        embeds, pooled = self.prompts.lookup(prompt_ids, 0.0, None)
        prediction = self.denoiser(
            noisy, timesteps, self.lq_encoder(batch.lq), embeds, pooled, _time_ids(batch.gt)
        )
        return predict_clean_latent(self.scheduler, noisy, timesteps, prediction.float())


class DecoderObjective(torch.nn.Module):
    """Stage 2: decode cached ``encode(gt)`` latents with LQ skips, L1 + λ1·(1 − SSIM) + λ2·L_aux (eq. 10).

    Args:
        decoder: ``DAEMDecoder``; ``decoder(latents, skips)`` gives ``DecoderOutput(sample, aux_loss,
            expert_usage)``.
        skip_encoder: Frozen module mapping lq [-1, 1] (B, 3, H, W) to the decoder's skip tuple
            (the VAE encoder's multi-scale features of ``encode(lq)``).
        lambda1: Weight of ``1 − SSIM``.
        lambda2: Weight of the load-balancing loss L_aux.
        crop_size: Side (pixels, multiple of the VAE factor) of the random latent-aligned crop (and
            flip) drawn each step (:func:`random_crop_flip`); 0 = whole.
        latents: ``None`` decodes the cached clean latents (the paper); an :class:`OneStepLatents`
            decodes the stage-1 denoiser's one-step restoration of the LQ image instead (``tiny``).
        upcast: Decode in fp32 with autocast off (``train.mixed_precision: fp16`` with a VAE whose
            config sets ``force_upcast``, as SDXL's does: its decoder overflows in fp16).
    """

    def __init__(
        self,
        decoder: torch.nn.Module,
        skip_encoder: torch.nn.Module,
        lambda1: float,
        lambda2: float,
        crop_size: int = 0,
        latents: OneStepLatents | None = None,
        upcast: bool = False,
    ):
        super().__init__()
        self.decoder, self.skip_encoder, self.lambda1, self.lambda2 = decoder, skip_encoder, lambda1, lambda2
        self.crop_size, self.latents, self.upcast = crop_size, latents, upcast

    def forward(self, batch: LatentBatch, generator: torch.Generator) -> ObjectiveOutput:
        batch = random_crop_flip(batch, self.crop_size, generator)
        with torch.no_grad():
            skips = tuple(skip.detach() for skip in self.skip_encoder(batch.lq))
        latents = batch.gt_latents if self.latents is None else self.latents(batch, generator)
        if self.upcast:
            with torch.autocast(latents.device.type, enabled=False):
                output = self.decoder(
                    latents.float(), tuple(skip.float() for skip in skips), routing_generator=generator
                )
        else:
            output = self.decoder(latents, skips, routing_generator=generator)
        restored = output.sample.float()
        l1 = (restored - batch.gt).abs().mean()
        structure = ssim((restored.clamp(-1, 1) + 1) / 2, (batch.gt + 1) / 2)
        aux = output.aux_loss.float()
        loss = l1 + self.lambda1 * (1 - structure) + self.lambda2 * aux
        usage = output.expert_usage.detach().float() if output.expert_usage is not None else None
        terms = {"l1": l1.detach(), "ssim": structure.detach(), "aux_loss": aux.detach()}
        return ObjectiveOutput(loss=loss, terms=terms, expert_usage=usage)
