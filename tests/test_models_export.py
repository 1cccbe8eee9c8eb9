"""The denoiser and the DAEM decoder trace with torch.onnx.export (dynamo) and match in onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime
import pytest
import torch

from unildiff.models.bundle import build_model
from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.models.prior import build_tiny_prior
from unildiff.models.text import encode_prompt, make_time_ids


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model(
        build_tiny_prior(PriorConfig(), seed=0),
        DAFFConfig(width=16, num_heads=2, patch_size=1),
        DAEMConfig(num_experts=2, window=16, up_blocks=(1, 2)),
    )
    with torch.no_grad():  # leave the zero init so the exported graphs compute something non-trivial
        model.daff.proj_out.weight.normal_(std=0.1)
        for name, parameter in model.decoder.daem_blocks.named_parameters():
            if name.endswith(("scale", "beta", "gamma")):
                parameter.normal_(std=0.1)
    for module in (model.lq_encoder, model.daff, model.unet, model.decoder, model.prior.vae):
        module.eval()
    return model


def _export_and_run(module, args, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, dynamo=True, optimize=False, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]
    flat = [tensor for arg in args for tensor in (arg if isinstance(arg, tuple) else (arg,))]
    assert len(names) == len(flat)
    return session.run(None, {name: tensor.numpy() for name, tensor in zip(names, flat, strict=True)})


def test_denoiser_exports(model, tmp_path):
    embeds, pooled = encode_prompt(model.prior, ["remove rain"])
    args = (
        torch.randn(1, model.unet.config.in_channels, 4, 4),
        torch.tensor([500.0]),
        torch.randn(1, 32, 4, 4),
        embeds,
        pooled,
        make_time_ids(32, 32, 1),
    )
    (noise_pred,) = _export_and_run(model.denoiser(), args, tmp_path / "denoiser.onnx")
    with torch.no_grad():
        expected = model.denoiser()(*args)
    np.testing.assert_allclose(noise_pred, expected.numpy(), atol=1e-4)


def test_decoder_exports(model, tmp_path):
    with torch.no_grad():
        _, lq_latent, *skips = model.conditioner()(torch.rand(1, 3, 32, 32) * 2 - 1)
        expected = model.decoder(lq_latent, tuple(skips))
    outputs = _export_and_run(model.decoder, (lq_latent, tuple(skips)), tmp_path / "decoder.onnx")
    np.testing.assert_allclose(outputs[0], expected.sample.numpy(), atol=1e-4)
    np.testing.assert_allclose(outputs[2], expected.expert_usage.numpy(), atol=1e-6)
    # Local routing (window 16) as dense gates: no op whose output shape depends on the data.
    import onnx

    operators = {node.op_type for node in onnx.load(str(tmp_path / "decoder.onnx")).graph.node}
    assert "TopK" in operators or "ArgMax" in operators or "ReduceMax" in operators, sorted(operators)
    assert not operators & {"NonZero", "GatherND", "ScatterND", "Compress", "Loop", "If"}, sorted(operators)
