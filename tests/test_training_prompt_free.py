"""``train.prompts: false`` (the paper's Table 5 rows without a task prompt): the restoration stages'
denoiser never sees a non-empty prompt; with prompts on it does (so the check can fail)."""

from __future__ import annotations

import pytest
import torch

from unildiff.models.config import DAFFConfig, PriorConfig
from unildiff.models.daff import DAFF
from unildiff.models.lq_encoder import LQEncoder
from unildiff.models.prior import build_tiny_prior
from unildiff.start import StartConfig
from unildiff.training.batches import LatentBatches, PromptTable
from unildiff.training.config import TrainConfig
from unildiff.training.latents import InMemoryLatentCache, TrainingPairs
from unildiff.training.objectives import OneStepLatents, noise_schedule
from unildiff.training.stage1 import stage1_objective

PROMPTS = ("remove rain", "remove noise", "remove haze")


class SpyDenoiser(torch.nn.Module):
    """Records the text embedding of every call and predicts zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids):
        self.seen.append(encoder_hidden_states.detach().clone())
        return torch.zeros_like(sample)

    def remove_hook(self) -> None:
        pass


@pytest.fixture(scope="module")
def prior():
    return build_tiny_prior(PriorConfig(), seed=0)


def _cache(prior, count: int = 6) -> InMemoryLatentCache:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 3, 32, 32, generator=generator) * 2 - 1
    pairs = TrainingPairs(
        lq=images,
        gt=images,
        prompts=tuple(PROMPTS[index % len(PROMPTS)] for index in range(count)),
        tasks=tuple(f"task{index % len(PROMPTS)}" for index in range(count)),
        pair_ids=tuple(f"pair{index}" for index in range(count)),
    )
    latents = torch.randn(count, prior.unet.config.in_channels, 8, 8, generator=generator)
    return InMemoryLatentCache(pairs, latents, float(prior.vae.config.scaling_factor))


def _empty_rows_seen(seen: list[torch.Tensor], table: PromptTable) -> tuple[int, int]:
    """(rows equal to the empty prompt's embedding, all rows)."""
    empty = table.prompt_embeds[0]
    rows = torch.cat(seen)
    return sum(bool(torch.equal(row, empty)) for row in rows), len(rows)


@pytest.mark.parametrize("prompts", [False, True])
def test_stage1_denoiser_sees_only_the_empty_prompt_without_prompts(prior, prompts):
    cache = _cache(prior)
    lq_encoder = LQEncoder.from_vae(prior.vae)
    train_config = TrainConfig(prompts=prompts, prompt_dropout=0.2, crop_size=32)
    daff = DAFF.from_unet(prior.unet, DAFFConfig(width=16, num_heads=2), lq_encoder.out_channels, seed=0)
    objective, batches = stage1_objective(prior, lq_encoder, daff, cache, StartConfig(), train_config)
    objective.denoiser.remove_hook()  # the shared prior's UNet keeps no DAFF hook
    spy = SpyDenoiser()
    objective.denoiser = spy
    for step in range(20):
        generator = torch.Generator().manual_seed(step)
        objective(batches(torch.arange(len(cache))), generator)
    empty, total = _empty_rows_seen(spy.seen, objective.prompts)
    assert total == 20 * len(cache)
    if prompts:  # 20 % dropout: most rows carry their task prompt
        assert 0 < empty < total // 2
    else:
        assert empty == total


@pytest.mark.parametrize("prompt_free", [False, True])
def test_stage2_inputs_are_restored_without_a_prompt_when_prompt_free(prior, prompt_free):
    cache = _cache(prior)
    table = PromptTable.from_prior(prior, cache.prompts)
    spy = SpyDenoiser()
    latents = OneStepLatents(
        spy, LQEncoder.from_vae(prior.vae), noise_schedule(prior.scheduler), table, prompt_free=prompt_free
    )
    latents(LatentBatches(cache, table)(torch.arange(len(cache))), torch.Generator().manual_seed(0))
    empty, total = _empty_rows_seen(spy.seen, table)
    assert empty == (total if prompt_free else 0)


def test_the_switch_sets_the_restoration_dropout_only():
    assert TrainConfig(prompts=False, prompt_dropout=0.2).restoration_prompt_dropout == 1.0
    assert TrainConfig(prompts=True, prompt_dropout=0.2).restoration_prompt_dropout == 0.2
