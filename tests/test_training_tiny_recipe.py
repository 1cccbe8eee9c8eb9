"""The tiny-only recipe (docs/training.md "Tiny-only deviations"): fresh crops and flips every step,
v-prediction targets, DAFF's per-position LQ path, DOD-style stage-2 inputs and the three-way split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from unildiff.data.sources import split_sources
from unildiff.errors import ConfigError, DataError
from unildiff.training.batches import LatentBatch, random_crop_flip, random_image_crop_flip
from unildiff.training.objectives import denoising_target, predict_clean_latent

FACTOR = 4


def _batch(size: int = 96) -> LatentBatch:
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, size, size, generator=generator) * 2 - 1
    # A stand-in encoder that is exactly translation- and flip-equivariant on FACTOR-aligned crops.
    latents = F.avg_pool2d(gt, FACTOR)
    return LatentBatch(lq=-gt, gt=gt, gt_latents=latents, prompt_ids=torch.zeros(2, dtype=torch.long))


def test_random_crops_keep_images_and_latents_in_register() -> None:
    batch = _batch()
    for seed in range(8):
        crop = random_crop_flip(batch, 64, torch.Generator().manual_seed(seed))
        assert crop.gt.shape[-2:] == (64, 64) and crop.gt_latents.shape[-2:] == (16, 16)
        assert torch.allclose(F.avg_pool2d(crop.gt, FACTOR), crop.gt_latents, atol=1e-6)
        assert torch.equal(crop.lq, -crop.gt)  # lq and gt get the same window and flip


def test_random_crops_are_drawn_afresh_every_step() -> None:
    batch = _batch()
    crops = {
        tuple(random_crop_flip(batch, 64, torch.Generator().manual_seed(seed)).gt[0, 0, 0, :4].tolist())
        for seed in range(16)
    }
    assert len(crops) > 8  # many different windows and flips, not one fixed crop per pair
    flipped = [
        torch.equal(random_image_crop_flip(batch.gt, 0, torch.Generator().manual_seed(s)), batch.gt.flip(-1))
        for s in range(16)
    ]
    assert any(flipped) and not all(flipped)


def test_random_crop_must_align_with_the_vae_factor() -> None:
    with pytest.raises(ConfigError, match="multiple of the VAE factor 4"):
        random_crop_flip(_batch(), 62, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_targets_invert_to_the_clean_latent(prediction_type: str) -> None:
    scheduler = DDPMScheduler(prediction_type=prediction_type, rescale_betas_zero_snr=True)
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(4, 16, 8, 8, generator=generator)
    noise = torch.randn(4, 16, 8, 8, generator=generator)
    timesteps = torch.tensor([0, 250, 500, 900])
    noisy = scheduler.add_noise(clean, noise, timesteps)
    target = denoising_target(scheduler, clean, noise, timesteps)
    expected = {"epsilon": noise, "v_prediction": scheduler.get_velocity(clean, noise, timesteps)}
    assert torch.allclose(target, expected.get(prediction_type, clean))
    assert torch.allclose(predict_clean_latent(scheduler, noisy, timesteps, target), clean, atol=1e-3)


def test_v_prediction_at_zero_terminal_snr_reads_the_clean_latent_at_the_last_step() -> None:
    scheduler = DDPMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    clean = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    last = torch.tensor([999])
    noisy = scheduler.add_noise(clean, noise, last)
    assert torch.allclose(noisy, noise, atol=1e-3)  # pure noise: x_T carries nothing of x0
    target = denoising_target(scheduler, clean, noise, last)
    assert torch.allclose(target, -clean, atol=1e-3)  # so v = -x0: the model must read f^LQ


def test_split_sources_three_ways_by_photo() -> None:
    ids = [f"photo{i}" for i in range(20)]
    train, val, test = split_sources(ids, 0.25, seed=0, val_fraction=0.15)
    assert (len(train), len(val), len(test)) == (12, 3, 5)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(train + val + test) == sorted(ids)
    assert split_sources(ids, 0.25, seed=0)[1] == []
    with pytest.raises(DataError, match="at least 3 source images"):
        split_sources(["a", "b"], 0.25, seed=0, val_fraction=0.15)


def test_daff_lq_path_is_zero_at_init_and_per_position_after() -> None:
    from unildiff.models.daff import DAFF

    torch.manual_seed(0)
    daff = DAFF(hidden_channels=8, lq_channels=6, text_dim=12, width=16, num_heads=2,
                normalize_lq=True, lq_residual=True).eval()  # fmt: skip
    hidden = torch.randn(1, 8, 4, 4)
    lq = 16 * torch.randn(1, 6, 4, 4)
    text = torch.randn(1, 3, 12)
    timestep = torch.tensor([500])
    assert torch.equal(daff(hidden, lq, timestep, text), torch.zeros_like(hidden))
    with torch.no_grad():
        daff.proj_out.weight.normal_()
    changed = lq.clone()
    changed[..., 0, 0] = -changed[..., 0, 0]  # one position's LQ feature only
    difference = (daff(hidden, lq, timestep, text) - daff(hidden, changed, timestep, text)).abs()
    assert difference[..., 0, 0].mean() > 10 * difference[..., 2:, 2:].mean()


def test_configure_scheduler_is_saved_with_the_prior(tmp_path: Path) -> None:
    from unildiff.models.config import PriorConfig
    from unildiff.models.prior import build_tiny_prior, load_prior, save_prior
    from unildiff.training.config import PriorTrainConfig
    from unildiff.training.prior import configure_scheduler

    prior = build_tiny_prior(PriorConfig(), seed=0)
    config = PriorTrainConfig(
        prediction_type="v_prediction", zero_terminal_snr=True, timestep_spacing="trailing"
    )
    configure_scheduler(prior, config)
    save_prior(prior, tmp_path / "prior")
    scheduler_config = load_prior(tmp_path / "prior").scheduler.config
    assert scheduler_config.prediction_type == "v_prediction"
    assert scheduler_config.rescale_betas_zero_snr and scheduler_config.timestep_spacing == "trailing"
    with pytest.raises(ConfigError, match="prior_train.prediction_type"):
        PriorTrainConfig(prediction_type="x0")


def test_stage2_on_denoised_latents_trains_only_the_decoder(tmp_path: Path) -> None:
    from unildiff.models.bundle import build_model
    from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
    from unildiff.models.decoder import DAEMDecoder
    from unildiff.models.prior import build_tiny_prior
    from unildiff.training.config import Stage2Config, TrainConfig
    from unildiff.training.latents import TrainingPairs, build_latent_cache
    from unildiff.training.loop import make_accelerator
    from unildiff.training.stage2 import train_stage2

    prior = build_tiny_prior(PriorConfig(), seed=0)
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(4, 3, 64, 64, generator=generator) * 2 - 1
    pairs = TrainingPairs(lq=gt.flip(-2), gt=gt, prompts=("remove noise",) * 4, tasks=("n",) * 4,
                          pair_ids=tuple("abcd"))  # fmt: skip
    cache = build_latent_cache(pairs, prior.vae, batch_size=4)
    stage1 = build_model(prior, DAFFConfig(width=16, num_heads=2), DAEMConfig())
    frozen = [tensor.clone() for module in (stage1.lq_encoder, stage1.daff, stage1.unet)
              for tensor in module.state_dict().values()]  # fmt: skip
    decoder = DAEMDecoder.from_vae(prior.vae, DAEMConfig())
    before = [tensor.clone() for tensor in decoder.state_dict().values()]
    train = TrainConfig(checkpoint_every=1, log_every=1)
    config = Stage2Config(steps=2, batch_size=2, crop_size=32, latent_source="denoised")
    with pytest.raises(ConfigError, match="stage2.latent_source=denoised"):
        train_stage2(
            prior, decoder, cache, config, train, tmp_path / "c0", None, make_accelerator(train), "k"
        )
    accelerator = make_accelerator(train)
    train_stage2(prior, decoder, cache, config, train, tmp_path / "c1", None, accelerator, "k", stage1)
    after = [tensor for module in (stage1.lq_encoder, stage1.daff, stage1.unet)
             for tensor in module.state_dict().values()]  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(frozen, after, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(before, decoder.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match="stage2.latent_source"):
        Stage2Config(latent_source="noisy")


class _RecordingDenoiser(torch.nn.Module):
    """Stands in for ``UniLDiffDenoiser``: records what it is given and predicts zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, sample, timesteps, lq_features, embeds, pooled, time_ids):
        self.inputs.append((sample.detach().clone(), timesteps.clone()))
        return sample * self.scale


def _lq_start_setup():
    from unildiff.models.conditioner import encode_with_skips
    from unildiff.models.config import PriorConfig
    from unildiff.models.prior import build_tiny_prior
    from unildiff.training.batches import PromptTable
    from unildiff.training.objectives import noise_schedule

    prior = build_tiny_prior(PriorConfig(), seed=0)
    scheduler = noise_schedule(prior.scheduler)
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1
    lq = (gt + 0.3 * torch.randn(gt.shape, generator=generator)).clamp(-1, 1)
    with torch.no_grad():
        batch = LatentBatch(lq=lq, gt=gt, gt_latents=encode_with_skips(prior.vae, gt)[0],
                            prompt_ids=torch.ones(4, dtype=torch.long))  # fmt: skip
        lq_latent = encode_with_skips(prior.vae, lq)[0]
    table = PromptTable.from_prior(prior, ["remove noise"])
    return prior, scheduler, table, batch, lq_latent


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_lq_start_target_maps_the_noised_lq_latent_onto_the_gt(prediction_type: str) -> None:
    from unildiff.training.objectives import target_for_clean

    scheduler = DDPMScheduler(prediction_type=prediction_type, rescale_betas_zero_snr=True)
    generator = torch.Generator().manual_seed(0)
    gt, lq, noise = (torch.randn(3, 16, 8, 8, generator=generator) for _ in range(3))
    timesteps = torch.tensor([49, 249, 900])
    noisy = scheduler.add_noise(lq, noise, timesteps)  # started from the LQ latent, not the gt
    target = target_for_clean(scheduler, noisy, gt, timesteps)
    assert torch.allclose(predict_clean_latent(scheduler, noisy, timesteps, target), gt, atol=1e-3)
    # From the gt itself it is the ordinary target.
    from_gt = scheduler.add_noise(gt, noise, timesteps)
    ordinary = denoising_target(scheduler, gt, noise, timesteps)
    assert torch.allclose(target_for_clean(scheduler, from_gt, gt, timesteps), ordinary, atol=1e-3)


def test_lq_start_objective_feeds_the_sampler_start() -> None:
    from unildiff.training.objectives import RestorationDenoisingObjective

    prior, scheduler, table, batch, lq_latent = _lq_start_setup()
    denoiser = _RecordingDenoiser()
    objective = RestorationDenoisingObjective(
        denoiser, torch.nn.Identity(), scheduler, table, 0.0, crop_size=0, vae=prior.vae,
        lq_start_probability=1.0, lq_start_timestep=249,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(3)
    objective(batch, generator)
    sample, timesteps = denoiser.inputs[-1]
    assert timesteps.tolist() == [249] * 4
    # The same draws the objective made: ε first (crop 0 draws only the flip), then t, then the rows.
    replay = torch.Generator().manual_seed(3)
    flipped = random_crop_flip(batch, 0, replay)
    noise = torch.randn(flipped.gt_latents.shape, generator=replay)
    lq_latent = lq_latent.flip(-1) if torch.equal(flipped.gt, batch.gt.flip(-1)) else lq_latent
    expected = scheduler.add_noise(lq_latent, noise, torch.full((4,), 249))
    assert torch.allclose(sample, expected, atol=1e-5)
    # The loss at a zero prediction is the target's size: the gt latent, seen from the LQ start.
    half = RestorationDenoisingObjective(
        denoiser, torch.nn.Identity(), scheduler, table, 0.0, vae=prior.vae,
        lq_start_probability=0.5, lq_start_timestep=249,
    )  # fmt: skip
    counts = []
    for seed in range(8):
        half(batch, torch.Generator().manual_seed(seed))
        counts.append(int((denoiser.inputs[-1][1] == 249).sum()))
    assert 0 < sum(counts) < 32  # a mix of LQ and gt starts
    with pytest.raises(ConfigError, match="needs the prior's VAE"):
        RestorationDenoisingObjective(denoiser, torch.nn.Identity(), scheduler, table, 0.0,
                                      lq_start_probability=0.5)  # fmt: skip


def test_lq_start_settings_are_checked() -> None:
    from unildiff.start import StartConfig

    with pytest.raises(ConfigError, match="start.training_fraction"):
        StartConfig(mode="lq", training_fraction=1.5)
    with pytest.raises(ConfigError, match="start.timestep"):
        StartConfig(timestep=-1)
    with pytest.raises(ConfigError, match="start.timestep"):
        StartConfig(timestep=True)
    with pytest.raises(ConfigError, match="start.mode"):
        StartConfig(mode="sdedit")
    with pytest.raises(
        ConfigError, match="start.training_fraction=0.5 trains an LQ start: it needs start.mode lq"
    ):
        StartConfig(mode="noise", training_fraction=0.5)


def test_stage2_latents_start_from_the_noised_lq_latent() -> None:
    from unildiff.training.objectives import OneStepLatents

    prior, scheduler, table, batch, lq_latent = _lq_start_setup()
    denoiser = _RecordingDenoiser()
    latents = OneStepLatents(
        denoiser, torch.nn.Identity(), scheduler, table, vae=prior.vae, start_timestep=99
    )
    restored = latents(batch, torch.Generator().manual_seed(5))
    noise = torch.randn(lq_latent.shape, generator=torch.Generator().manual_seed(5))
    sample, timesteps = denoiser.inputs[-1]
    assert timesteps.tolist() == [99] * 4
    assert torch.allclose(sample, scheduler.add_noise(lq_latent, noise, timesteps), atol=1e-5)
    # The restoration is the x0 the prediction implies at that start (zero prediction: a scaled start).
    implied = predict_clean_latent(scheduler, sample, timesteps, torch.zeros_like(sample))
    assert torch.allclose(restored, implied, atol=1e-5)
    assert not torch.allclose(restored, torch.zeros_like(restored))
    with pytest.raises(ConfigError, match="needs the prior's VAE"):
        OneStepLatents(denoiser, torch.nn.Identity(), scheduler, table, start_timestep=99)
