"""RestorationPipeline on small, spatially local stand-in graphs (fast; the tiny real model is in
test_pipeline_model.py): seeding, CFG batching, sizes and tiling."""

from __future__ import annotations

import torch
from torch import nn

from unildiff.backends import LQEncoding
from unildiff.models.config import SDXL_SCHEDULER
from unildiff.pipeline import RestorationPipeline, SamplingConfig, make_scheduler
from unildiff.start import StartConfig

#: The LQ latent noised to the first timestep of the whole schedule (SDEdit at strength 1).
SDEDIT = StartConfig(mode="lq", timestep=999, noise=1.0)


class LocalGraphs:
    """Per-pixel graphs (1×1 and stride-8 convolutions), so tiles are exact and tiled must equal untiled."""

    pixel_multiple = 16

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.encoder = nn.Conv2d(3, 8, 8, stride=8)
        self.denoiser = nn.Conv2d(8, 4, 1)
        self.text = nn.Linear(6, 4)
        self.decoder = nn.ConvTranspose2d(4, 3, 8, stride=8)
        for module in (self.encoder, self.denoiser, self.text, self.decoder):
            for parameter in module.parameters():
                parameter.data = torch.randn(parameter.shape, generator=generator) * 0.2
        self.denoise_batches: list[int] = []

    @torch.no_grad()
    def encode_lq(self, lq):
        features = self.encoder(lq)
        return LQEncoding(features[:, :4], features[:, 4:], (lq,))

    @torch.no_grad()
    def denoise(self, sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids):
        self.denoise_batches.append(sample.shape[0])
        prompt = (
            self.text(text_embeds)[:, :, None, None]
            + encoder_hidden_states.mean(dim=(1, 2))[:, None, None, None]
        )
        return (
            self.denoiser(torch.cat([sample, lq_features], 1)) + prompt + 1e-4 * timestep[:, None, None, None]
        )

    @torch.no_grad()
    def decode(self, latents, skips):
        return torch.tanh(self.decoder(latents)) * 0.5 + 0.5 * skips[0]


def encode_prompt(prompts):
    embeds = torch.stack([torch.full((3, 5), float(len(prompt)) / 10) for prompt in prompts])
    pooled = torch.stack([torch.linspace(0, 1, 6) * (1 + len(prompt)) for prompt in prompts])
    return embeds, pooled


def make_pipeline(graphs=None, start=SDEDIT, **overrides):
    config = SamplingConfig(**{"steps": 3, **overrides})
    scheduler = make_scheduler(config.scheduler, SDXL_SCHEDULER)
    return RestorationPipeline(graphs or LocalGraphs(), encode_prompt, scheduler, config, start)


def lq_image(height, width, seed=1):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_any_size_comes_back_in_range_and_size():
    pipeline = make_pipeline()
    for height, width in [(13, 17), (40, 24)]:
        restored = pipeline(lq_image(height, width), "remove rain")
        assert restored.shape == (1, 3, height, width)
        assert restored.min() >= -1 and restored.max() <= 1


def test_seed_reproduces_and_changes_output():
    pipeline = make_pipeline(start=StartConfig(mode="noise"))
    lq = lq_image(32, 32)
    first = pipeline(lq, "remove rain", torch.Generator().manual_seed(3))
    again = pipeline(lq, "remove rain", torch.Generator().manual_seed(3))
    other = pipeline(lq, "remove rain", torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_cfg_batch_equals_two_separate_passes():
    graphs = LocalGraphs()
    pipeline = make_pipeline(graphs, cfg=5.0)
    latent = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    lq_features = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    timestep = torch.tensor(500.0)
    conditioning = pipeline.encode_prompt("remove rain", torch.device("cpu"))
    assert conditioning.guidance and conditioning.prompt_embeds.shape[0] == 2
    batched = pipeline.predict_noise(latent, timestep, lq_features, conditioning, 32, 32)
    assert graphs.denoise_batches[-1] == 2

    def single(prompt):
        embeds, pooled = encode_prompt([prompt])
        return graphs.denoise(latent, timestep.reshape(1), lq_features, embeds, pooled, torch.zeros(1, 6))

    uncond, cond = single(""), single("remove rain")
    assert torch.allclose(batched, uncond + 5.0 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(batched, cond, atol=1e-3)  # guidance really changed the prediction


def test_prompt_free_and_low_cfg_run_a_single_pass():
    graphs = LocalGraphs()
    make_pipeline(graphs, cfg=5.0)(lq_image(16, 16), "")
    make_pipeline(graphs, cfg=1.0)(lq_image(16, 16), "remove rain")
    assert set(graphs.denoise_batches) == {1}


def test_tiled_equals_untiled_on_one_tile_and_on_many():
    graphs = LocalGraphs()
    lq = lq_image(64, 96)
    untiled = make_pipeline(graphs)(lq, "remove rain")
    one_tile = make_pipeline(graphs, tile=96, tile_overlap=16)(lq, "remove rain")
    assert torch.equal(one_tile, untiled)
    graphs.denoise_batches.clear()
    many = make_pipeline(graphs, tile=32, tile_overlap=16)(lq, "remove rain")
    assert len(graphs.denoise_batches) > 3 * 3  # several tiles per step really ran
    assert torch.allclose(many, untiled, atol=1e-4)


def test_lq_start_runs_the_timesteps_at_or_below_its_start():
    graphs = LocalGraphs()
    pipeline = make_pipeline(graphs, StartConfig(mode="lq", timestep=201, noise=1.0), steps=10, cfg=1.0)
    pipeline(lq_image(16, 16), "remove rain")
    assert len(graphs.denoise_batches) == 3
    assert pipeline.timesteps() == [201, 101, 1]  # SDXL's leading 10-step schedule: 901, 801, ..., 1
    between = make_pipeline(graphs, StartConfig(mode="lq", timestep=250, noise=1.0), steps=10)
    assert between.timesteps() == [201, 101, 1]  # the first schedule timestep at or below the start


def test_lq_start_below_every_timestep_is_refused_naming_the_setting():
    import pytest

    from unildiff.errors import ConfigError

    pipeline = make_pipeline(start=StartConfig(mode="lq", timestep=0, noise=1.0), steps=10)
    with pytest.raises(ConfigError, match="start.timestep=0 is below every timestep"):
        pipeline(lq_image(16, 16), "remove rain")


class RecordingGraphs(LocalGraphs):
    """LocalGraphs that keep the first sample each restoration feeds the denoiser."""

    def __init__(self):
        super().__init__()
        self.samples: list[torch.Tensor] = []

    def denoise(self, sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids):
        self.samples.append(sample.clone())
        return super().denoise(sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids)


def test_noiseless_lq_start_feeds_the_scaled_lq_latent_whatever_the_seed():
    graphs = RecordingGraphs()
    pipeline = make_pipeline(graphs, StartConfig(mode="lq", timestep=1, noise=0.0), steps=50, cfg=1.0)
    lq = lq_image(32, 32)
    first = pipeline(lq, "remove rain", torch.Generator().manual_seed(3))
    other = pipeline(lq, "remove rain", torch.Generator().manual_seed(4))
    assert len(graphs.samples) == 2  # one step each, the last of the 50
    assert torch.equal(first, other)  # no noise was drawn into the start
    lq_latent = graphs.encode_lq(lq).lq_latent
    scheduler = make_scheduler("euler", SDXL_SCHEDULER)
    scheduler.set_timesteps(50)
    alpha = scheduler.alphas_cumprod[int(scheduler.timesteps[-1])]
    # The model input is √ᾱ_t · z_lq: what training's lq_start_noise = 0 feeds the denoiser.
    assert torch.allclose(graphs.samples[0], alpha.sqrt() * lq_latent, atol=1e-5)
    noisy = make_pipeline(graphs, StartConfig(mode="lq", timestep=1, noise=1.0), steps=50, cfg=1.0)
    assert not torch.equal(
        noisy(lq, "remove rain", torch.Generator().manual_seed(3)),
        noisy(lq, "remove rain", torch.Generator().manual_seed(4)),
    )


def test_start_noise_must_be_a_fraction():
    import pytest

    from unildiff.errors import ConfigError

    with pytest.raises(ConfigError, match="start.noise"):
        StartConfig(mode="lq", noise=1.5)
