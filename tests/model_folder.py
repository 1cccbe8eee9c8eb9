"""A tiny random UniLDiff model folder for tests: the real layout, the ``tiny`` preset's settings.

Random weights (no training): the tests using it check loading, settings, refusals and file handling,
not restoration quality (the smoke pipeline's gate checks that).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.pipeline import SamplingConfig
from unildiff.start import StartConfig

#: The ``tiny`` preset's start and sampling settings (params.yaml): one step at t = 49 from the LQ latent.
TINY_START = StartConfig(mode="lq", timestep=49, noise=0.0, training_fraction=1.0)
TINY_SAMPLING = SamplingConfig(
    steps=20, cfg=1.0, auto_tile=64, color_fix="adaptive", color_fix_levels=3, detail_fix_radius=1
)
TASKS = {"denoise_25": "remove noise", "derain": "remove rain", "dehaze": "remove haze"}


def build_tiny_pipeline(
    seed: int = 0, sampling: SamplingConfig = TINY_SAMPLING, start: StartConfig = TINY_START
):
    """A random tiny ``UniLDiffPipeline`` with trailing timesteps (as the trained tiny prior has)."""
    from diffusers import EulerDiscreteScheduler

    from unildiff.models.bundle import build_model
    from unildiff.models.prior import build_tiny_prior
    from unildiff.pipeline_unildiff import pipeline_from_model

    prior = build_tiny_prior(PriorConfig(), seed=seed)
    prior.scheduler = EulerDiscreteScheduler.from_config(prior.scheduler.config, timestep_spacing="trailing")
    torch.manual_seed(seed)
    model = build_model(prior, DAFFConfig(width=16, num_heads=2), DAEMConfig(num_experts=2))
    with torch.no_grad():  # DAFF's output is zero at initialisation; make it matter
        generator = torch.Generator().manual_seed(seed + 1)
        for parameter in model.daff.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
    model.eval()
    return pipeline_from_model(model, sampling, start, TASKS)


def save_tiny_folder(folder: Path, seed: int = 0, **settings) -> Path:
    """:func:`build_tiny_pipeline` saved as a model folder at ``folder``; ``settings`` replace fields of
    :data:`TINY_SAMPLING` (``sampling``) or :data:`TINY_START` (``start``) when given as dataclasses."""
    from unildiff.pipeline_unildiff import save_model_folder

    return save_model_folder(build_tiny_pipeline(seed, **settings), folder)


def replace_sampling(**changes) -> SamplingConfig:
    """:data:`TINY_SAMPLING` with ``changes``."""
    return dataclasses.replace(TINY_SAMPLING, **changes)
