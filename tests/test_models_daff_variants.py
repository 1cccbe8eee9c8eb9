"""``daff.variant`` (paper Table 4): each variant builds, runs, starts as the identity and exports to ONNX;
``both`` is the DAFF that existed before the variants, weight for weight."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import onnxruntime
import pytest
import torch

from unildiff.errors import ConfigError
from unildiff.models.bundle import build_model
from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.models.daff import DAFF
from unildiff.models.prior import build_tiny_prior
from unildiff.models.text import encode_prompt, make_time_ids

VARIANTS = ("both", "double", "single", "rsa")

# Recorded with the DAFF of commit ef684d5 (before ``variant`` existed), by _small_daff() below and
# _perturbed_output(): the sha256 of the initial state dict, and the output after a fixed random proj_out.
BOTH_STATE_SHA256 = "6d6ed1085428da860e07b48eadc9e1f7f8e4ace7fbf5198f694e2e9c6199fe22"
BOTH_OUTPUT_SUM, BOTH_OUTPUT_ABS_SUM = -23.57455062866211, 490.16729736328125
BOTH_OUTPUT_FIRST = [-0.33896106481552124, 0.22447369992733002, -0.08068094402551651]


def _small_daff(**overrides) -> DAFF:
    torch.manual_seed(0)
    sizes = {"width": 16, "num_heads": 2, "normalize_lq": True, "lq_residual": True, **overrides}
    return DAFF(hidden_channels=32, lq_channels=24, text_dim=32, **sizes)


def _inputs(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    hidden = torch.randn(2, 32, 6, 4, generator=generator)
    lq = torch.randn(2, 24, 6, 4, generator=generator)
    text = torch.randn(2, 5, 32, generator=generator)
    return hidden, lq, torch.tensor([10.0, 700.0]), text


def _perturbed_output(daff: DAFF) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        daff.proj_out.weight.copy_(torch.randn(daff.proj_out.weight.shape, generator=generator) * 0.1)
        return daff(*_inputs(generator))


def _state_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_both_is_the_daff_from_before_the_variants():
    daff = _small_daff(variant="both")
    assert _state_sha256(daff) == BOTH_STATE_SHA256
    output = _perturbed_output(daff)
    assert output.sum().item() == pytest.approx(BOTH_OUTPUT_SUM, rel=1e-5)
    assert output.abs().sum().item() == pytest.approx(BOTH_OUTPUT_ABS_SUM, rel=1e-5)
    np.testing.assert_allclose(output[0, :3, 0, 0].numpy(), BOTH_OUTPUT_FIRST, rtol=1e-5, atol=1e-6)


def test_a_saved_daff_without_the_variant_key_loads_as_both(tmp_path):
    daff = _small_daff()
    daff.save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    del config["variant"]
    config_path.write_text(json.dumps(config))
    loaded = DAFF.from_pretrained(tmp_path)
    assert loaded.config.variant == "both"
    assert _state_sha256(loaded) == _state_sha256(daff)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_builds_the_blocks_it_names(variant):
    daff = _small_daff(variant=variant, num_double_blocks=2, num_single_blocks=3)
    expected = {
        "both": (2, 3, 0),
        "double": (2, 0, 0),
        "single": (0, 3, 0),
        "rsa": (0, 0, 5),
    }[variant]
    assert (len(daff.double_blocks), len(daff.single_blocks), len(daff.rsa_blocks)) == expected
    assert (daff.time_embedding is None) == (variant == "rsa")


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_runs_and_only_rsa_ignores_the_timestep(variant):
    daff = _small_daff(variant=variant)
    generator = torch.Generator().manual_seed(3)
    hidden, lq, _, text = _inputs(generator)
    with torch.no_grad():
        assert daff(hidden, lq, torch.tensor([10.0, 700.0]), text).abs().max() == 0  # zero init
        daff.proj_out.weight.normal_(std=0.1)
        early = daff(hidden, lq, torch.tensor([10.0, 10.0]), text)
        late = daff(hidden, lq, torch.tensor([900.0, 900.0]), text)
    assert early.shape == hidden.shape and torch.isfinite(early).all()
    assert early.abs().max() > 1e-3
    if variant == "rsa":  # RSA has no timestep-aware modulation (the paper's reading of its Table 4 row)
        torch.testing.assert_close(early, late, rtol=0, atol=0)
    else:
        assert (early - late).abs().max() > 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_starts_as_the_prior(variant):
    """At initialisation the denoiser with any variant computes what the bare UNet computes."""
    torch.manual_seed(0)
    config = DAFFConfig(width=16, num_heads=2, patch_size=1, variant=variant)
    model = build_model(build_tiny_prior(PriorConfig(), seed=0), config, DAEMConfig(num_experts=2))
    generator = torch.Generator().manual_seed(1)
    lq = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    embeds, pooled = encode_prompt(model.prior, ["remove rain", "remove noise"])
    sample = torch.randn(2, model.unet.config.in_channels, 8, 8, generator=generator)
    timestep, time_ids = torch.tensor([20.0, 800.0]), make_time_ids(32, 32, 2)
    with torch.no_grad():
        lq_features = model.conditioner()(lq)[0]
        prediction = model.denoiser()(sample, timestep, lq_features, embeds, pooled, time_ids)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        bare = model.unet(sample, timestep, embeds, added_cond_kwargs=added).sample
        torch.testing.assert_close(prediction, bare, rtol=0, atol=1e-6)
        model.daff.proj_out.weight.normal_(std=0.1)
        moved = model.denoiser()(sample, timestep, lq_features, embeds, pooled, time_ids)
    assert (moved - bare).abs().max() > 1e-4  # the identity is the zero init, not a disconnected DAFF


@pytest.mark.parametrize("variant", ("double", "single", "rsa"))  # ``both``: tests/test_models_export.py
def test_variant_exports_to_onnx(variant, tmp_path):
    daff = _small_daff(variant=variant).eval()
    generator = torch.Generator().manual_seed(3)
    args = _inputs(generator)
    with torch.no_grad():
        daff.proj_out.weight.normal_(std=0.1)
        expected = daff(*args)
    path = tmp_path / f"daff_{variant}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(daff, args, path, dynamo=True, optimize=False, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {value.name: arg.numpy() for value, arg in zip(session.get_inputs(), args, strict=False)}
    (output,) = session.run(None, feeds)
    np.testing.assert_allclose(output, expected.numpy(), atol=1e-4)


def test_bad_variant_params_are_named():
    with pytest.raises(ConfigError, match="daff.variant must be one of both, double, single, rsa"):
        DAFFConfig(variant="triple")
    with pytest.raises(ConfigError, match=r"daff.num_double_blocks must be >= 1 with daff.variant=double"):
        DAFFConfig(variant="double", num_double_blocks=0)
    with pytest.raises(ConfigError, match=r"daff.num_single_blocks must be >= 1 with daff.variant=both"):
        DAFFConfig(num_single_blocks=0)
    assert DAFFConfig(variant="double", num_single_blocks=0).variant == "double"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_of_a_variant_learns(variant):
    """No built module is left out of the forward pass (stage 1a trains all of DAFF; DDP needs them used)."""
    daff = _small_daff(variant=variant)
    with torch.no_grad():
        daff.proj_out.weight.normal_(std=0.1)
    daff(*_inputs(torch.Generator().manual_seed(3))).square().sum().backward()
    unused = [name for name, parameter in daff.named_parameters() if parameter.grad is None]
    assert not unused, unused
