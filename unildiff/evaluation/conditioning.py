"""Does the trained denoiser use its conditions? The ε-loss of eq. 9 with one condition taken away.

For a fixed sample of cached training pairs, fixed noise and a few fixed timesteps, the L1 noise
error ‖ε − ε̂‖₁ of the trained denoiser is measured four ways:

- ``full``: as trained (f^LQ of the pair's own LQ image, the task prompt, DAFF on);
- ``lq_shuffled``: every sample gets another sample's f^LQ (``roll`` by one over the batch);
- ``no_prompt``: the empty prompt instead of the task prompt;
- ``daff_off``: the (fine-tuned) UNet alone, without the DAFF residual.

A condition the model uses makes its row's error larger than ``full``; a gap of zero means the model
ignores it. The pairs and the noise come from a generator seeded with ``seed``, so the probe is
deterministic; no weights change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unildiff.errors import ConfigError


@dataclass(frozen=True)
class ConditioningRow:
    """Mean L1 noise error at one timestep, per variant (lower is better)."""

    timestep: int
    full: float
    lq_shuffled: float
    no_prompt: float
    daff_off: float


@torch.no_grad()
def conditioning_usage(
    model: object,
    cache: object,
    timesteps: tuple[int, ...] = (125, 375, 625, 875),
    num_samples: int = 64,
    seed: int = 0,
) -> list[ConditioningRow]:
    """Measure how much the denoiser's ε-prediction depends on f^LQ, the prompt and DAFF.

    Args:
        model: A loaded :class:`~unildiff.models.bundle.UniLDiffModel` (eval mode).
        cache: A :class:`~unildiff.training.latents.LatentSource` (``models/cache/latents``): lq and gt
            [-1, 1], (N, 3, H, W), scaled gt latents (N, C, h, w) and the prompts.
        timesteps: Training timesteps to probe, each in [0, num_train_timesteps).
        num_samples: Pairs drawn (without replacement) from the cache; at least 2, so shuffling changes
            every sample's f^LQ.
        seed: Seed of the pair choice and of the noise.

    Returns:
        One :class:`ConditioningRow` per timestep.

    Raises:
        ConfigError: ``num_samples`` or a timestep out of range.
    """
    from unildiff.models.text import make_time_ids
    from unildiff.training.batches import LatentBatches, PromptTable
    from unildiff.training.objectives import noise_schedule

    scheduler = noise_schedule(model.prior.scheduler)
    total = scheduler.config.num_train_timesteps
    if not 2 <= num_samples <= len(cache):
        raise ConfigError(f"num_samples must be in [2, {len(cache)}] (the cache's pairs), got {num_samples}")
    for timestep in timesteps:
        if not 0 <= timestep < total:
            raise ConfigError(f"timestep {timestep} outside [0, {total})")
    table = PromptTable.from_prior(model.prior, cache.prompts)
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(cache), generator=generator)[:num_samples]
    batch = LatentBatches(cache, table)(indices)
    device = next(model.unet.parameters()).device
    lq_features = model.lq_encoder(batch.lq.to(device))
    embeds, pooled = (tensor.to(device) for tensor in table.lookup(batch.prompt_ids, 0.0, None))
    empty_ids = torch.zeros_like(batch.prompt_ids)
    empty_embeds, empty_pooled = (tensor.to(device) for tensor in table.lookup(empty_ids, 0.0, None))
    time_ids = make_time_ids(batch.gt.shape[-2], batch.gt.shape[-1], num_samples).to(device)
    latents = batch.gt_latents.to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    denoiser = model.denoiser()

    def error(prediction: torch.Tensor) -> float:
        return (prediction.float() - noise).abs().mean().item()

    rows = []
    for timestep in timesteps:
        steps = torch.full((num_samples,), timestep, dtype=torch.long, device=device)
        noisy = scheduler.add_noise(latents, noise, steps)
        bare = model.unet(
            noisy,
            steps,
            encoder_hidden_states=embeds,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
            return_dict=False,
        )[0]
        rows.append(
            ConditioningRow(
                timestep=timestep,
                full=error(denoiser(noisy, steps, lq_features, embeds, pooled, time_ids)),
                lq_shuffled=error(denoiser(noisy, steps, lq_features.roll(1, 0), embeds, pooled, time_ids)),
                no_prompt=error(denoiser(noisy, steps, lq_features, empty_embeds, empty_pooled, time_ids)),
                daff_off=error(bare),
            )
        )
    return rows


def format_conditioning(rows: list[ConditioningRow]) -> str:
    """A Markdown table of ``rows`` with each variant's gap to ``full``."""
    lines = [
        "| t | full | lq_shuffled (gap) | no_prompt (gap) | daff_off (gap) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{value:.4f} ({value - row.full:+.4f})"
            for value in (row.lq_shuffled, row.no_prompt, row.daff_off)
        ]
        lines.append(f"| {row.timestep} | {row.full:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
