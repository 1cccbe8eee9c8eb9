"""Training objectives of every stage: modules holding the networks, returning an ``ObjectiveOutput``.

The noise, timesteps and prompt dropout are drawn here, in training code, from the generator the loop
passes in (seeded per step); the networks themselves never sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unildiff.errors import ConfigError
from unildiff.training.batches import ImageBatch, LatentBatch, PromptTable
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


def _time_ids(images: torch.Tensor) -> torch.Tensor:
    from unildiff.models.text import make_time_ids

    return make_time_ids(images.shape[-2], images.shape[-1], images.shape[0]).to(images.device)


class VAEObjective(torch.nn.Module):
    """Tiny prior, phase 1: L1 + L2 reconstruction of clean images plus ``kl_weight`` · KL.

    Args:
        vae: The ``AutoencoderKL`` to train.
        kl_weight: Weight of the KL divergence to N(0, I) (summed over latent elements, batch mean).
    """

    def __init__(self, vae: torch.nn.Module, kl_weight: float) -> None:
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight

    def forward(self, batch: ImageBatch, generator: torch.Generator) -> ObjectiveOutput:
        posterior = self.vae.encode(batch.gt).latent_dist
        reconstruction = self.vae.decode(posterior.sample(generator=generator)).sample
        l1 = (reconstruction - batch.gt).abs().mean()
        l2 = F.mse_loss(reconstruction, batch.gt)
        kl = posterior.kl().mean()
        return ObjectiveOutput(
            loss=l1 + l2 + self.kl_weight * kl, terms={"l1": l1.detach(), "kl": kl.detach()}
        )


class PriorDenoisingObjective(torch.nn.Module):
    """Tiny prior, phase 2: ε-prediction of the bare UNet on clean latents, ‖ε − ε̂‖² (LDM), text-conditioned.

    Args:
        unet: The ``UNet2DConditionModel`` to train.
        scheduler: Training noise schedule (:func:`noise_schedule`).
        prompts: Frozen prompt embeddings.
        prompt_dropout: Probability of the empty prompt.
    """

    def __init__(self, unet: torch.nn.Module, scheduler: object, prompts: PromptTable, prompt_dropout: float):
        super().__init__()
        self.unet, self.scheduler, self.prompts, self.prompt_dropout = (
            unet,
            scheduler,
            prompts,
            prompt_dropout,
        )

    def forward(self, batch: LatentBatch, generator: torch.Generator) -> ObjectiveOutput:
        noisy, noise, timesteps = add_noise(self.scheduler, batch.gt_latents, generator)
        embeds, pooled = self.prompts.lookup(batch.prompt_ids, self.prompt_dropout, generator)
        prediction = self.unet(
            noisy,
            timesteps,
            encoder_hidden_states=embeds,
            return_dict=False,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": _time_ids(batch.gt)},
        )[0]
        loss = F.mse_loss(prediction.float(), noise.float())
        return ObjectiveOutput(loss=loss, terms={"mse": loss.detach()})


class RestorationDenoisingObjective(torch.nn.Module):
    """Stages 1a/1b: ε-prediction of the UNet + DAFF conditioned on f^LQ, ‖ε − ε̂‖₁ (paper eq. 9).

    Args:
        denoiser: ``UniLDiffDenoiser(unet, daff)``.
        lq_encoder: ``LQEncoder``; its output f^LQ gets gradients only when its parameters require them.
        scheduler: Training noise schedule (:func:`noise_schedule`).
        prompts: Frozen prompt embeddings.
        prompt_dropout: Probability of the empty prompt (classifier-free guidance, 20% in the paper).
    """

    def __init__(
        self,
        denoiser: torch.nn.Module,
        lq_encoder: torch.nn.Module,
        scheduler: object,
        prompts: PromptTable,
        prompt_dropout: float,
    ) -> None:
        super().__init__()
        self.denoiser, self.lq_encoder = denoiser, lq_encoder
        self.scheduler, self.prompts, self.prompt_dropout = scheduler, prompts, prompt_dropout

    def forward(self, batch: LatentBatch, generator: torch.Generator) -> ObjectiveOutput:
        lq_features = self.lq_encoder(batch.lq)
        noisy, noise, timesteps = add_noise(self.scheduler, batch.gt_latents, generator)
        embeds, pooled = self.prompts.lookup(batch.prompt_ids, self.prompt_dropout, generator)
        prediction = self.denoiser(noisy, timesteps, lq_features, embeds, pooled, _time_ids(batch.gt))
        loss = (noise.float() - prediction.float()).abs().mean()
        return ObjectiveOutput(loss=loss, terms={"l1": loss.detach()})


class DecoderObjective(torch.nn.Module):
    """Stage 2: decode cached ``encode(gt)`` latents with LQ skips, L1 + λ1·(1 − SSIM) + λ2·L_aux (eq. 10).

    Args:
        decoder: ``DAEMDecoder``; ``decoder(latents, skips)`` gives ``DecoderOutput(sample, aux_loss,
            expert_usage)``.
        skip_encoder: Frozen module mapping lq [-1, 1] (B, 3, H, W) to the decoder's skip tuple
            (the VAE encoder's multi-scale features of ``encode(lq)``).
        lambda1: Weight of ``1 − SSIM``.
        lambda2: Weight of the load-balancing loss L_aux.
        crop_size: Side (pixels, multiple of the VAE factor) of a random latent-aligned crop per
            step; 0 = whole.
    """

    def __init__(
        self,
        decoder: torch.nn.Module,
        skip_encoder: torch.nn.Module,
        lambda1: float,
        lambda2: float,
        crop_size: int = 0,
    ):
        super().__init__()
        self.decoder, self.skip_encoder, self.lambda1, self.lambda2 = decoder, skip_encoder, lambda1, lambda2
        self.crop_size = crop_size

    def _crop(self, batch: LatentBatch, generator: torch.Generator) -> LatentBatch:
        if not self.crop_size or self.crop_size >= min(batch.gt.shape[-2:]):
            return batch
        factor = batch.gt.shape[-1] // batch.gt_latents.shape[-1]  # the VAE's spatial factor
        if self.crop_size % factor:
            raise ConfigError(
                f"stage2.crop_size must be a multiple of the VAE factor {factor}, got {self.crop_size}"
            )
        cells = torch.randint(
            0,
            (min(batch.gt.shape[-2:]) - self.crop_size) // factor + 1,
            (2,),
            generator=generator,
            device=generator.device,
        ).tolist()
        top, left, latent = cells[0] * factor, cells[1] * factor, self.crop_size // factor
        return LatentBatch(
            lq=batch.lq[..., top : top + self.crop_size, left : left + self.crop_size],
            gt=batch.gt[..., top : top + self.crop_size, left : left + self.crop_size],
            gt_latents=batch.gt_latents[..., cells[0] : cells[0] + latent, cells[1] : cells[1] + latent],
            prompt_ids=batch.prompt_ids,
        )

    def forward(self, batch: LatentBatch, generator: torch.Generator) -> ObjectiveOutput:
        batch = self._crop(batch, generator)
        with torch.no_grad():
            skips = tuple(skip.detach() for skip in self.skip_encoder(batch.lq))
        output = self.decoder(batch.gt_latents, skips)
        restored = output.sample.float()
        l1 = (restored - batch.gt).abs().mean()
        structure = ssim((restored.clamp(-1, 1) + 1) / 2, (batch.gt + 1) / 2)
        aux = output.aux_loss.float()
        loss = l1 + self.lambda1 * (1 - structure) + self.lambda2 * aux
        usage = output.expert_usage.detach().float() if output.expert_usage is not None else None
        terms = {"l1": l1.detach(), "ssim": structure.detach(), "aux_loss": aux.detach()}
        return ObjectiveOutput(loss=loss, terms=terms, expert_usage=usage)
