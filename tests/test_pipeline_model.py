"""RestorationPipeline on a fresh tiny UniLDiff model built in-process (no training, no files)."""

from __future__ import annotations

import pytest
import torch

from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.pipeline import RestorationPipeline, SamplingConfig
from unildiff.start import StartConfig

#: The LQ latent noised to the first timestep of the whole schedule (SDEdit at strength 1).
SDEDIT = StartConfig(mode="lq", timestep=999, noise=1.0)


@pytest.fixture(scope="module")
def tiny_model():
    from unildiff.models.bundle import build_model
    from unildiff.models.prior import build_tiny_prior

    torch.manual_seed(0)
    model = build_model(build_tiny_prior(PriorConfig(), seed=0), DAFFConfig(), DAEMConfig())
    with torch.no_grad():  # DAFF's output is zero at initialisation; make it matter for these tests
        for parameter in model.daff.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)) * 0.02)
    return model


def _lq(height, width):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(2)) * 2 - 1


def test_restores_odd_size_in_range_and_seed_reproduces(tiny_model):
    pipeline = RestorationPipeline.from_model(tiny_model, SamplingConfig(steps=2), StartConfig())
    assert pipeline.pixel_multiple == 8  # tiny: VAE factor 4 x UNet down-sampling 2 x DAFF patch 1
    lq = _lq(20, 27)
    first = pipeline(lq, "remove rain", torch.Generator().manual_seed(5))
    assert first.shape == (1, 3, 20, 27) and first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, pipeline(lq, "remove rain", torch.Generator().manual_seed(5)))
    assert not torch.allclose(first, pipeline(lq, "remove rain", torch.Generator().manual_seed(6)))


def test_cfg_batch_equals_two_separate_passes_through_the_real_denoiser(tiny_model):
    pipeline = RestorationPipeline.from_model(tiny_model, SamplingConfig(steps=2, cfg=5.0), SDEDIT)
    encoding = pipeline.graphs.encode_lq(_lq(32, 32))
    latent = torch.randn(encoding.lq_latent.shape, generator=torch.Generator().manual_seed(3))
    timestep = torch.tensor(700.0)
    conditioning = pipeline.encode_prompt("remove rain", torch.device("cpu"))
    batched = pipeline.predict_noise(latent, timestep, encoding.lq_features, conditioning, 32, 32)
    from unildiff.models.text import encode_prompt, make_time_ids

    separate = []
    for prompt in ("", "remove rain"):
        embeds, pooled = encode_prompt(tiny_model.prior, [prompt])
        separate.append(
            pipeline.graphs.denoise(
                latent, timestep.reshape(1), encoding.lq_features, embeds, pooled, make_time_ids(32, 32, 1)
            )
        )
    uncond, cond = separate
    assert torch.allclose(batched, uncond + 5.0 * (cond - uncond), atol=1e-4)


def test_tiled_equals_untiled_when_the_image_fits_one_tile(tiny_model):
    lq = _lq(32, 48)
    untiled = RestorationPipeline.from_model(tiny_model, SamplingConfig(steps=2), SDEDIT)(lq, "remove rain")
    tiled = RestorationPipeline.from_model(
        tiny_model, SamplingConfig(steps=2, tile=48, tile_overlap=16), SDEDIT
    )(lq, "remove rain")
    assert torch.equal(tiled, untiled)
    many = RestorationPipeline.from_model(
        tiny_model, SamplingConfig(steps=2, tile=32, tile_overlap=16), SDEDIT
    )(lq, "remove rain")
    assert many.shape == lq.shape and torch.isfinite(many).all()


def test_plain_decoder_ablation_runs_on_shared_modules(tiny_model):
    config = SamplingConfig(steps=2)
    daem = RestorationPipeline.from_model(tiny_model, config, SDEDIT)
    plain = RestorationPipeline(
        daem.graphs.with_plain_decoder(),
        daem.prompt_encoder,
        daem.scheduler.__class__.from_config(daem.scheduler.config),
        config,
        SDEDIT,
    )
    lq = _lq(16, 16)
    plain_image, daem_image = plain(lq, "remove rain"), daem(lq, "remove rain")
    assert plain_image.shape == daem_image.shape == lq.shape and torch.isfinite(plain_image).all()
    assert plain.graphs.denoiser is daem.graphs.denoiser and plain.graphs.decoder is None


def test_half_precision_graphs_restore_close_to_fp32(tiny_model):
    """``restore --dtype bf16`` wraps the torch graphs in CastGraphs: every module computes in bf16 (run
    here on CPU; the CLI allows half types on CUDA only), the pipeline still sees float32 in and out."""
    import copy

    from unildiff.backends.torch import CastGraphs

    config = SamplingConfig(steps=2)
    lq = _lq(16, 16)
    reference = RestorationPipeline.from_model(tiny_model, config, SDEDIT)(lq, "remove rain")
    model = copy.deepcopy(tiny_model)
    fp32 = RestorationPipeline.from_model(model, config, SDEDIT)
    half = RestorationPipeline.with_prior(
        CastGraphs(fp32.graphs, torch.bfloat16), model.prior, config, SDEDIT
    )
    restored = half(lq, "remove rain")
    assert next(model.unet.parameters()).dtype == next(model.decoder.parameters()).dtype == torch.bfloat16
    assert restored.dtype == torch.float32 and restored.shape == lq.shape
    assert not torch.equal(restored, reference)  # it really ran in bf16
    assert (restored - reference).abs().max() < 0.1
