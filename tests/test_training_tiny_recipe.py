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
    from unildiff.training.stage2 import train_daem

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
        train_daem(prior, decoder, cache, config, train, tmp_path / "c0", None, make_accelerator(train), "k")
    accelerator = make_accelerator(train)
    train_daem(prior, decoder, cache, config, train, tmp_path / "c1", None, accelerator, "k", stage1)
    after = [tensor for module in (stage1.lq_encoder, stage1.daff, stage1.unet)
             for tensor in module.state_dict().values()]  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(frozen, after, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(before, decoder.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match="stage2.latent_source"):
        Stage2Config(latent_source="noisy")
