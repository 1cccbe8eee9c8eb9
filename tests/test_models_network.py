"""UniLDiff network on the tiny prior: identity at init, trainable sets per stage, save/load, routing."""

from __future__ import annotations

import pytest
import torch

from unildiff.errors import ConfigError, MissingArtifactError
from unildiff.models.bundle import build_model, load_trained_model
from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.models.daff import DAFF
from unildiff.models.decoder import DAEMDecoder
from unildiff.models.lq_encoder import LQEncoder
from unildiff.models.prior import build_tiny_prior, save_prior
from unildiff.models.text import encode_prompt, make_time_ids

SMOKE_DAFF = DAFFConfig(width=16, num_double_blocks=1, num_single_blocks=1, num_heads=2, patch_size=2)
SMOKE_DAEM = DAEMConfig(num_experts=3, top_k=1, window=16, up_blocks=(0, 1, 2))


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return build_model(build_tiny_prior(PriorConfig(), seed=0), SMOKE_DAFF, SMOKE_DAEM)


def _inputs(model, batch=2, size=32):
    generator = torch.Generator().manual_seed(1)
    lq = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    embeds, pooled = encode_prompt(model.prior, ["remove rain", "denoise"][:batch])
    channels = model.unet.config.in_channels
    latent_size = size // 2 ** (len(model.prior.vae.config.block_out_channels) - 1)
    sample = torch.randn(batch, channels, latent_size, latent_size, generator=generator)
    return lq, sample, torch.tensor([20.0, 800.0][:batch]), embeds, pooled, make_time_ids(size, size, batch)


def _perturb_zero_inits(model):
    """Move the zero-initialised gates off zero so every parameter gets a nonzero gradient."""
    with torch.no_grad():
        model.daff.proj_out.weight.normal_(std=0.1)
        for name, parameter in model.decoder.daem_blocks.named_parameters():
            if name.endswith(("scale", "beta", "gamma")):
                parameter.normal_(std=0.1)


def test_identity_at_initialisation(model):
    lq, sample, timestep, embeds, pooled, time_ids = _inputs(model)
    with torch.no_grad():
        lq_features, lq_latent, *skips = model.conditioner()(lq)
        noise_pred = model.denoiser()(sample, timestep, lq_features, embeds, pooled, time_ids)
        bare = model.unet(
            sample, timestep, embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
        ).sample
        torch.testing.assert_close(noise_pred, bare, rtol=0, atol=1e-6)
        decoded = model.decoder.eval()(lq_latent, tuple(skips))
        reference = model.prior.vae.decode(lq_latent / model.prior.vae.config.scaling_factor).sample
        torch.testing.assert_close(decoded.sample, reference, rtol=0, atol=1e-6)
        assert decoded.aux_loss.ndim == 0 and decoded.aux_loss.item() == 0.0
        assert decoded.expert_usage.shape == (3,)
        _perturb_zero_inits(model)
        changed = model.denoiser()(sample, timestep, lq_features, embeds, pooled, time_ids)
    assert (changed - bare).abs().max() > 1e-3  # the identity is the zero init, not a disconnected DAFF
    assert not any("daff" in key for key in model.unet.state_dict())


def test_fusion_off_is_the_bare_unet_and_round_trips(tmp_path):
    """``daff.fusion: false`` (the ablation without DAFF): the denoiser is the bare UNet."""
    torch.manual_seed(0)
    config = DAFFConfig(width=16, num_heads=2, patch_size=2, fusion=False)
    model = build_model(build_tiny_prior(PriorConfig(), seed=0), config, SMOKE_DAEM)
    _perturb_zero_inits(model)  # a fused DAFF would now change the prediction
    lq, sample, timestep, embeds, pooled, time_ids = _inputs(model)
    with torch.no_grad():
        lq_features = model.lq_encoder(lq)
        denoised = model.denoiser()(sample, timestep, lq_features, embeds, pooled, time_ids)
        bare = model.unet(
            sample, timestep, embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
        ).sample
        torch.testing.assert_close(denoised, bare, rtol=0, atol=0)
        hidden = model.unet.conv_in(sample)
        assert model.daff(hidden, lq_features, timestep, embeds).abs().max() == 0
    model.daff.save_pretrained(tmp_path / "daff")
    assert DAFF.from_pretrained(tmp_path / "daff").config.fusion is False


def _set_trainable(model, trainable):
    for module in (
        model.prior.vae,
        model.prior.unet,
        model.lq_encoder,
        model.daff,
        model.unet,
        model.decoder,
    ):
        module.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)


def _check_gradients(trainable, frozen):
    for module in trainable:
        assert all(parameter.grad is not None for parameter in module.parameters())
        assert sum(parameter.grad.abs().sum() for parameter in module.parameters()) > 0
    for module in frozen:
        assert all(parameter.grad is None for parameter in module.parameters())


@pytest.mark.parametrize("stage", ["stage1a", "stage1b"])
def test_denoiser_gradients_reach_exactly_the_stage_parameters(model, stage):
    _perturb_zero_inits(model)
    trainable = [model.daff] if stage == "stage1a" else [model.lq_encoder, model.daff, model.unet]
    _set_trainable(model, trainable)
    lq, sample, timestep, embeds, pooled, time_ids = _inputs(model)
    lq_features = model.lq_encoder(lq)
    noise_pred = model.denoiser()(sample, timestep, lq_features, embeds, pooled, time_ids)
    noise_pred.abs().mean().backward()
    frozen = [model.prior.vae, model.lq_encoder] if stage == "stage1a" else [model.prior.vae]
    _check_gradients(trainable, frozen + ([model.unet] if stage == "stage1a" else []))


def test_decoder_gradients_reach_exactly_the_stage2_parameters(model):
    _perturb_zero_inits(model)
    _set_trainable(model, [model.decoder])
    lq, *_ = _inputs(model)
    with torch.no_grad():
        _, lq_latent, *skips = model.conditioner()(lq)
    output = model.decoder.train()(lq_latent, tuple(skips))
    assert output.aux_loss.item() > 0
    (output.sample.abs().mean() + 0.01 * output.aux_loss).backward()
    _check_gradients([model.decoder], [model.prior.vae, model.lq_encoder, model.daff, model.unet])
    router = model.decoder.daem_blocks["2"].router.weight
    assert router.grad.abs().sum() > 0


def test_eval_routing_is_deterministic_and_training_routing_is_noisy(model):
    _perturb_zero_inits(model)
    lq, *_ = _inputs(model)
    with torch.no_grad():
        _, lq_latent, *skips = model.conditioner()(lq)
        model.decoder.eval()
        first = model.decoder(lq_latent, tuple(skips))
        second = model.decoder(lq_latent, tuple(skips))
        assert torch.equal(first.sample, second.sample)
        assert torch.isclose(first.expert_usage.sum(), torch.tensor(1.0))  # top_k = 1
        model.decoder.train()
        global_state = torch.get_rng_state()
        noisy = model.decoder(lq_latent, tuple(skips), torch.Generator().manual_seed(0)).aux_loss
        again = model.decoder(lq_latent, tuple(skips), torch.Generator().manual_seed(0)).aux_loss
        other = model.decoder(lq_latent, tuple(skips), torch.Generator().manual_seed(1)).aux_loss
        quiet = model.decoder(lq_latent, tuple(skips)).aux_loss
        quiet_again = model.decoder(lq_latent, tuple(skips)).aux_loss
        assert torch.equal(torch.get_rng_state(), global_state)  # the decoder never draws from torch's RNG
    assert noisy.item() == again.item()  # the noise is the caller's generator's
    assert noisy.item() != other.item()
    assert quiet.item() == quiet_again.item()  # no generator: no routing noise


def test_save_load_round_trips_are_safetensors(model, tmp_path):
    _perturb_zero_inits(model)
    save_prior(model.prior, tmp_path / "prior")
    for name in ("lq_encoder", "daff", "unet"):
        getattr(model, name).save_pretrained(tmp_path / "stage1b" / name)
    model.decoder.save_pretrained(tmp_path / "stage2" / "decoder")
    for folder in ("stage1b", "stage2"):
        files = {path.suffix for path in (tmp_path / folder).rglob("*") if path.is_file()}
        assert files == {".json", ".safetensors"}
    loaded = load_trained_model(tmp_path / "prior", tmp_path / "stage1b", tmp_path / "stage2")
    assert isinstance(loaded.daff, DAFF) and isinstance(loaded.lq_encoder, LQEncoder)
    assert isinstance(loaded.decoder, DAEMDecoder) and loaded.decoder.config.window == 16
    lq, sample, timestep, embeds, pooled, time_ids = _inputs(model)
    with torch.no_grad():
        model.decoder.eval()
        expected = model.denoiser()(sample, timestep, model.lq_encoder(lq), embeds, pooled, time_ids)
        actual = loaded.denoiser()(sample, timestep, loaded.lq_encoder(lq), embeds, pooled, time_ids)
        torch.testing.assert_close(actual, expected)
        _, lq_latent, *skips = model.conditioner()(lq)
        torch.testing.assert_close(
            loaded.decoder(lq_latent, tuple(skips)).sample, model.decoder(lq_latent, tuple(skips)).sample
        )


def test_missing_artifacts_and_bad_params_are_named(model, tmp_path):
    save_prior(model.prior, tmp_path / "prior")
    with pytest.raises(MissingArtifactError, match="dvc repro stage1b"):
        load_trained_model(tmp_path / "prior", tmp_path / "stage1b", tmp_path / "stage2")
    for name in ("lq_encoder", "daff", "unet"):
        getattr(model, name).save_pretrained(tmp_path / "stage1b" / name)
    with pytest.raises(MissingArtifactError, match="dvc repro stage2"):
        load_trained_model(tmp_path / "prior", tmp_path / "stage1b", tmp_path / "stage2")
    with pytest.raises(ConfigError, match="daem.top_k"):
        DAEMConfig(num_experts=2, top_k=3)
    with pytest.raises(ConfigError, match="daem.window"):
        DAEMDecoder.from_vae(model.prior.vae, DAEMConfig(window=3, up_blocks=(0,)))
    with pytest.raises(ConfigError, match="daff.width"):
        DAFFConfig(width=24, num_heads=4)


def test_eval_runs_only_the_selected_experts_with_the_dense_result():
    """Per-image routing in eval: each expert runs only on the images that selected it, and the mixture
    equals the dense sum that training and exported graphs compute."""
    from unildiff.models.daem import DAEMBlock

    torch.manual_seed(0)
    block = DAEMBlock(channels=8, skip_channels=4, num_experts=3, top_k=1, window=0).eval()
    for parameter in block.parameters():  # zero-initialised scales would hide the experts
        parameter.data.normal_(0, 0.3)
    x, skip = torch.randn(6, 8, 12, 12), torch.randn(6, 4, 12, 12)
    images_per_call = []
    for expert in block.experts:
        expert.register_forward_hook(lambda module, inputs, output: images_per_call.append(len(inputs[0])))
    with torch.no_grad():
        _, _, _, selected = block(x, skip)
        assert sum(images_per_call) == len(x)  # top-1: every image ran exactly one expert
        assert len(set(selected.argmax(1).tolist())) > 1  # and the images chose different experts
        fused = block.fuse(torch.cat([x, skip], dim=1))
        probabilities = block.router(block._router_tokens(fused)).softmax(dim=1)
        gates = probabilities * (probabilities >= probabilities.amax(1, keepdim=True))
        dense = sum(gates[:, index : index + 1] * expert(fused) for index, expert in enumerate(block.experts))
        assert torch.allclose(block._mixture(fused, gates), dense, atol=1e-6, rtol=0)
