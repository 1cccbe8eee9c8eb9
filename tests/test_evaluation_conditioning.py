"""The conditioning probe: zero gaps for an untrained DAFF, non-zero once DAFF's output is non-zero."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from typer.testing import CliRunner

from unildiff.cli import app
from unildiff.errors import ConfigError
from unildiff.evaluation.conditioning import conditioning_usage, format_conditioning
from unildiff.models.bundle import build_model
from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.models.prior import build_tiny_prior
from unildiff.training.latents import TrainingPairs, build_latent_cache


@pytest.fixture(scope="module")
def model_and_cache():
    prior = build_tiny_prior(PriorConfig(), seed=0)
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1
    # Very different LQ images (flat levels, dark to bright): a DAFF that reads f^LQ must notice a shuffle.
    levels = torch.tensor([-0.9, -0.3, 0.3, 0.9]).view(4, 1, 1, 1)
    lq = (levels + 0.05 * torch.randn(gt.shape, generator=generator)).clamp(-1, 1)
    prompts = ("remove noise", "remove rain", "remove noise", "remove rain")
    pairs = TrainingPairs(lq=lq, gt=gt, prompts=prompts, tasks=prompts, pair_ids=("0", "1", "2", "3"))
    torch.manual_seed(0)  # build_model's fresh DAFF draws from the global RNG: fix it, whatever ran before
    model = build_model(prior, DAFFConfig(width=16, num_heads=2), DAEMConfig())
    for module in (model.lq_encoder, model.daff, model.unet, model.decoder):
        module.eval()
    return model, build_latent_cache(pairs, prior.vae, batch_size=4)


def test_zero_initialised_daff_has_no_lq_or_daff_gap(model_and_cache) -> None:
    model, cache = model_and_cache
    rows = conditioning_usage(model, cache, timesteps=(100, 900), num_samples=4)
    assert [row.timestep for row in rows] == [100, 900]
    for row in rows:
        assert row.full > 0
        assert row.lq_shuffled == pytest.approx(row.full, abs=1e-7)  # zero residual: f^LQ cannot matter
        assert row.daff_off == pytest.approx(row.full, abs=1e-7)
        assert row.no_prompt != row.full  # the random UNet's cross-attention does read the prompt


class LQEcho(torch.nn.Module):
    """A stand-in DAFF whose residual is f^LQ's channel mean: it certainly reads the LQ image."""

    config = types.SimpleNamespace(fusion=True)  # as DAFF.config: the denoiser hooks it into the UNet

    def forward(self, hidden, lq_features, timestep, encoder_hidden_states):
        return lq_features.mean(1, keepdim=True).expand_as(hidden)


def test_a_denoiser_that_reads_lq_shows_a_gap(model_and_cache) -> None:
    model, cache = model_and_cache
    reading = dataclasses.replace(model, daff=LQEcho(), _denoiser=None)
    rows = conditioning_usage(reading, cache, timesteps=(100,), num_samples=4)
    assert abs(rows[0].lq_shuffled - rows[0].full) > 1e-4  # vs <= 1e-7 when DAFF ignores f^LQ
    assert abs(rows[0].daff_off - rows[0].full) > 1e-4
    table = format_conditioning(rows)
    assert table.splitlines()[0].startswith("| t | full |") and "| 100 |" in table


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_samples": 1}, "num_samples"), ({"timesteps": (1000,), "num_samples": 4}, "timestep 1000")],
)
def test_bad_arguments_name_the_argument(model_and_cache, kwargs, message) -> None:
    model, cache = model_and_cache
    with pytest.raises(ConfigError, match=message):
        conditioning_usage(model, cache, **kwargs)


def test_cli_names_the_missing_stage(tmp_path) -> None:
    result = CliRunner().invoke(app, ["diagnose-conditioning", "--prior", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "prior" in result.output
