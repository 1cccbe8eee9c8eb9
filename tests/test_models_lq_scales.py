"""``daff.lq_scales``: multi-scale f^LQ (paper Fig. 2) from the LQ encoder, fused by DAFF.

``lq_scales: 1`` must be the single-scale model bit for bit (same weights from the same seed, same outputs,
saved models without the new keys load as before); larger values stack the encoder's finer resolutions.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from unildiff.errors import ConfigError
from unildiff.models.bundle import build_model
from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.models.daff import DAFF
from unildiff.models.lq_encoder import LQEncoder
from unildiff.models.prior import build_tiny_prior
from unildiff.models.text import encode_prompt, make_time_ids

SMALL = {"width": 16, "num_heads": 2, "normalize_lq": True, "lq_residual": True}


@pytest.fixture(scope="module")
def prior():
    return build_tiny_prior(PriorConfig(), seed=0)


def _model(prior, lq_scales: int):
    torch.manual_seed(0)
    return build_model(prior, DAFFConfig(lq_scales=lq_scales, **SMALL), DAEMConfig(num_experts=2))


def _lq(height: int = 32, width: int = 40) -> torch.Tensor:
    return torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _levels(lq_encoder: LQEncoder, lq: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The single-scale trunk as before the scales existed, keeping each level before its down-sampler."""
    hidden, levels = lq_encoder.encoder.conv_in(lq), []
    for block in lq_encoder.encoder.down_blocks:
        for resnet in block.resnets:
            hidden = resnet(hidden, temb=None)
        levels.append(hidden)
        for downsampler in block.downsamplers or ():
            hidden = downsampler(hidden)
    return levels, lq_encoder.encoder.mid_block(hidden)


def _denoise(model, lq: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    sample = torch.randn(2, model.unet.config.in_channels, 8, 10, generator=generator)
    embeds, pooled = encode_prompt(model.prior, ["remove rain", "remove noise"])
    features = model.lq_encoder(lq)
    timestep, time_ids = torch.tensor([10.0, 700.0]), make_time_ids(32, 40, 2)
    return model.denoiser()(sample, timestep, features, embeds, pooled, time_ids)


def _perturb(daff: DAFF) -> None:
    """Non-zero output projection (and finer-scale embeddings), so DAFF's residual depends on f^LQ."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in daff.named_parameters():
            if name.startswith(("proj_out", "lq_scale_embeds")):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


@pytest.mark.parametrize("lq_scales", [1, 2, 3])
def test_each_scale_is_the_encoder_map_at_its_resolution(prior, lq_scales):
    model = _model(prior, lq_scales)
    lq_encoder = model.lq_encoder
    assert lq_encoder.config.num_scales == model.daff.config.lq_scales == lq_scales
    assert lq_encoder.scale_channels == (32,) * lq_scales  # tiny: every VAE block is 32 wide
    assert lq_encoder.out_channels == sum(32 * 4**scale for scale in range(lq_scales))  # 32, 160, 672
    with torch.no_grad():
        features = lq_encoder(_lq())
        levels, mid = _levels(lq_encoder, _lq())
    assert features.shape == (2, lq_encoder.out_channels, 8, 10)
    widths = [32 * 4**scale for scale in range(lq_scales)]
    scales = features.split(widths, dim=1)
    assert torch.equal(scales[0], mid)
    for scale in range(1, lq_scales):  # scale s = level L-1-s, at 2^s times the latent resolution
        native = F.pixel_shuffle(scales[scale], 2**scale)
        assert native.shape == (2, 32, 8 * 2**scale, 10 * 2**scale)
        assert torch.equal(native, levels[len(levels) - 1 - scale])


def test_single_scale_is_bit_identical_to_the_single_map_path(prior):
    """lq_scales=1 runs the code of the model before the scales: f^LQ is the trunk's mid-block output, DAFF
    embeds it once, and no module is added (the state dicts keep their keys and values)."""
    model = _model(prior, 1)
    assert model.lq_encoder.state_dict().keys() == LQEncoder.from_vae(prior.vae).state_dict().keys()
    assert not list(model.daff.lq_scale_embeds) and not list(model.daff.lq_scale_norms)
    _perturb(model.daff)
    lq = _lq()
    with torch.no_grad():
        features = model.lq_encoder(lq)
        hidden = model.lq_encoder.encoder.conv_in(lq)
        for block in model.lq_encoder.encoder.down_blocks:
            hidden = block(hidden)
        assert torch.equal(features, model.lq_encoder.encoder.mid_block(hidden))
        single_map = model.daff.lq_embed(model.daff.lq_norm(features))
        assert torch.equal(model.daff._embed_lq(features), single_map)
        assert torch.isfinite(_denoise(model, lq)).all()


def test_more_scales_start_as_the_single_scale_model(prior):
    """Same seed: every shared weight is the single-scale model's and the finer embeddings are zero, so the
    multi-scale denoiser's output is exactly the single-scale one until training moves them."""
    single, multi = _model(prior, 1), _model(prior, 3)
    shared = single.daff.state_dict()
    extra = {key: value for key, value in multi.daff.state_dict().items() if key not in shared}
    assert all(torch.equal(multi.daff.state_dict()[key], value) for key, value in shared.items())
    assert {key.split(".")[0] for key in extra} == {"lq_scale_norms", "lq_scale_embeds"}
    assert all(not value.any() for key, value in extra.items() if key.startswith("lq_scale_embeds"))
    with torch.no_grad():
        for model in (single, multi):
            model.daff.proj_out.weight.normal_(generator=torch.Generator().manual_seed(4), std=0.1)
        assert torch.equal(_denoise(single, _lq()), _denoise(multi, _lq()))
        for embed in multi.daff.lq_scale_embeds:  # only the finer scales move: the output must follow
            embed.weight.normal_(generator=torch.Generator().manual_seed(5), std=0.1)
        assert (_denoise(single, _lq()) - _denoise(multi, _lq())).abs().max() > 1e-4


def test_gradients_reach_every_scale(prior):
    """Every scale's projection learns, and every scale's slice of f^LQ carries gradient to the encoder."""
    model = _model(prior, 3)
    _perturb(model.daff)  # a trained state: proj_out and the finer embeddings away from zero
    generator = torch.Generator().manual_seed(2)
    sample = torch.randn(2, model.unet.config.in_channels, 8, 10, generator=generator)
    embeds, pooled = encode_prompt(model.prior, ["remove rain", "remove noise"])
    features = model.lq_encoder(_lq()).detach().requires_grad_(True)
    timestep, time_ids = torch.tensor([10.0, 700.0]), make_time_ids(32, 40, 2)
    model.denoiser()(sample, timestep, features, embeds, pooled, time_ids).square().mean().backward()
    daff = model.daff
    projections = [daff.lq_embed, *daff.lq_scale_embeds]
    assert len(projections) == 3
    for index, projection in enumerate(projections):
        assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0, index
    for index, part in enumerate(features.grad.split([32, 128, 512], dim=1)):
        assert part.abs().sum() > 0, f"scale {index} gets no gradient"


def test_round_trip_and_old_saved_configs(prior, tmp_path):
    model = _model(prior, 2)
    _perturb(model.daff)
    for module, name in ((model.lq_encoder, "lq_encoder"), (model.daff, "daff")):
        module.save_pretrained(tmp_path / name, safe_serialization=True)
    lq_encoder = LQEncoder.from_pretrained(tmp_path / "lq_encoder", use_safetensors=True)
    daff = DAFF.from_pretrained(tmp_path / "daff", use_safetensors=True)
    assert lq_encoder.config.num_scales == 2 and daff.config.lq_scales == 2
    assert list(daff.config.lq_fine_channels) == [32]
    lq, hidden = _lq(), torch.randn(2, 32, 8, 10, generator=torch.Generator().manual_seed(5))
    text = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(6))
    conditioning = (torch.tensor([3.0, 9.0]), text)
    with torch.no_grad():
        features = lq_encoder(lq)
        assert torch.equal(features, model.lq_encoder(lq))
        assert torch.equal(daff(hidden, features, *conditioning), model.daff(hidden, features, *conditioning))

    # A model saved before the scales existed has neither key: it loads single-scale, weights unchanged.
    old = _model(prior, 1)
    for module, name in ((old.lq_encoder, "old_lq_encoder"), (old.daff, "old_daff")):
        module.save_pretrained(tmp_path / name, safe_serialization=True)
        config_path = tmp_path / name / "config.json"
        config = json.loads(config_path.read_text())
        for key in ("num_scales", "lq_scales", "lq_fine_channels"):
            config.pop(key, None)
        config_path.write_text(json.dumps(config))
    lq_encoder = LQEncoder.from_pretrained(tmp_path / "old_lq_encoder")
    daff = DAFF.from_pretrained(tmp_path / "old_daff")
    assert lq_encoder.config.num_scales == 1 and daff.config.lq_scales == 1
    with torch.no_grad():
        assert torch.equal(lq_encoder(lq), old.lq_encoder(lq))
    assert all(torch.equal(daff.state_dict()[key], value) for key, value in old.daff.state_dict().items())


def test_bad_scales_are_named(prior):
    with pytest.raises(ConfigError, match="daff.lq_scales must be >= 1, got 0"):
        DAFFConfig(lq_scales=0)
    with pytest.raises(ConfigError, match=r"daff.lq_scales must be in \[1, 3\] .* 3 levels, got 4"):
        build_model(prior, DAFFConfig(lq_scales=4, **SMALL), DAEMConfig(num_experts=2))
    with pytest.raises(ConfigError, match="daff.lq_scales=2 but the LQ encoder gives 1 scale"):
        DAFF.from_unet(prior.unet, DAFFConfig(lq_scales=2, **SMALL), 32)
    daff = DAFF.from_unet(prior.unet, DAFFConfig(lq_scales=2, **SMALL), (32, 32))
    with pytest.raises(ValueError, match="takes 160 f\\^LQ channels, got 32"):
        daff(torch.zeros(1, 32, 4, 4), torch.zeros(1, 32, 4, 4), torch.tensor(1.0), torch.zeros(1, 2, 64))


def test_model_folder_round_trip_and_tiled_restoration(prior, tmp_path):
    """The pipeline folder records the scales (lq_encoder and daff configs) and restores the same image
    after loading, tiled (the stacked scales are cut like any latent-grid tensor)."""
    from unildiff.pipeline import SamplingConfig
    from unildiff.pipeline_unildiff import UniLDiffPipeline, pipeline_from_model, save_model_folder
    from unildiff.start import StartConfig

    model = _model(prior, 3)
    _perturb(model.daff)
    model.eval()
    sampling = SamplingConfig(steps=2, tile=32, tile_overlap=16, color_fix="none")
    start = StartConfig(mode="lq", timestep=999, noise=1.0)
    pipeline = pipeline_from_model(model, sampling, start, {"rain": "remove rain"})
    folder = save_model_folder(pipeline, tmp_path / "model")
    loaded = UniLDiffPipeline.from_pretrained(folder)
    assert loaded.lq_encoder.config.num_scales == 3 and loaded.daff.config.lq_scales == 3
    lq = _lq(40, 48)[:1]
    generator = torch.Generator().manual_seed(5)
    first = pipeline(lq, "remove rain", generator=generator, output_type="pt").images[0]
    generator = torch.Generator().manual_seed(5)
    again = loaded(lq, "remove rain", generator=generator, output_type="pt").images[0]
    assert first.shape == (1, 3, 40, 48) and torch.isfinite(first).all()
    assert torch.equal(first, again)
