"""The three restoration graphs at SDXL's size, with random weights (``unildiff export onnx --sdxl-size``).

Each graph's torch module and example inputs are built here, seeded per component, so that separate
processes build the same weights: the VAE (seed 0) behind both the LQ encoder graph and the decoder
graph is one VAE. Sizes: the published SDXL UNet and VAE (:mod:`unildiff.bench.sdxl_size`; a
``width_divisor`` > 1 keeps every block and divides the channels, for tests) and the ``sdxl`` preset's
DAFF and DAEM (:data:`~unildiff.bench.sdxl_size.SDXL_DAFF`, :data:`~unildiff.bench.sdxl_size.SDXL_DAEM`;
``tests/test_export_sdxl.py`` checks them against ``presets/sdxl.yaml`` over ``params.yaml``).

Weights and arithmetic are in the graph's dtype; every graph input and output stays float32 (the
graphs cast at their boundary), so the ONNX Runtime and TensorRT backends call them unchanged. The
timestep, the time ids and the pooled text embedding stay float32 inside until diffusers casts them
(:data:`FLOAT32_INPUTS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from unildiff.errors import ConfigError
from unildiff.export.specs import GraphName

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FLOAT32_INPUTS = frozenset({"timestep", "time_ids", "text_embeds"})
"""Inputs kept float32 inside the graph: diffusers embeds the timestep and the time ids in float32, and
concatenates the time ids' embedding with ``text_embeds`` before casting to the UNet's dtype (torch promotes
a mixed concat; the ONNX exporter emits a Concat of mixed types that the checker rejects)."""
SEEDS = {"vae": 0, "unet": 1, "daff": 2, "decoder": 3, "fill": 4}
PROMPT_TOKENS = 77


@dataclass(frozen=True)
class SdxlGraphsConfig:
    """What ``export onnx --sdxl-size`` builds.

    Attributes:
        denoiser_dtype: ``fp16`` (default, as NVIDIA's ``demo/Diffusion`` exports the SDXL UNet), ``bf16``
            or ``fp32``: weights and arithmetic of the UNet + DAFF graph.
        vae_dtype: the LQ encoder's and the DAEM decoder's dtype (default ``fp32``: the SDXL VAE
            overflows in fp16).
        width_divisor: 1 for SDXL's channels; 2-16 divides them (tests).
        image_size: square side of the parity input (pixels, a multiple of 32).
        second_size: a second side, at batch 1, every graph must also reproduce (dynamic axes).
        opset: ONNX opset.
    """

    denoiser_dtype: str = "fp16"
    vae_dtype: str = "fp32"
    width_divisor: int = 1
    image_size: int = 256
    second_size: int = 128
    opset: int = 18

    def __post_init__(self) -> None:
        from unildiff.bench.sdxl_size import WIDTH_DIVISORS

        for option, value in (("--dtype", self.denoiser_dtype), ("--vae-dtype", self.vae_dtype)):
            if value not in DTYPES:
                raise ConfigError(f"{option} must be one of {tuple(DTYPES)}, got {value!r}")
        if self.width_divisor not in WIDTH_DIVISORS:
            raise ConfigError(f"--width-divisor must be one of {WIDTH_DIVISORS}, got {self.width_divisor}")
        for name in ("image_size", "second_size"):
            value = getattr(self, name)
            if value < 64 or value % 32:
                raise ConfigError(f"{name} must be a multiple of 32 and >= 64, got {value}")
        if self.opset < 17:
            raise ConfigError(f"--opset must be >= 17 (native LayerNorm), got {self.opset}")

    def dtype(self, graph: GraphName) -> str:
        """The dtype name of ``graph``."""
        return self.denoiser_dtype if graph is GraphName.DENOISER else self.vae_dtype


class CastGraph(nn.Module):
    """Run ``module`` in ``dtype``: float inputs cast in (except :data:`FLOAT32_INPUTS`), outputs cast to
    float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cast = [
            tensor if name in FLOAT32_INPUTS or not tensor.is_floating_point() else tensor.to(self.dtype)
            for name, tensor in zip(self.input_names, inputs, strict=True)
        ]
        outputs = self.module(*cast)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return tuple(output.float() for output in outputs)


def _seeded(seed: int, dtype: torch.dtype, build):
    """``build()`` with the global RNG at ``seed`` and ``dtype`` as the default (restored after)."""
    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            return build()
        finally:
            torch.set_default_dtype(previous)


def _fill_zeros(module: nn.Module, scale: float = 0.05) -> None:
    """Give zero-initialised parameters (DAFF's output projection, DAEM's scales) small random values,
    so the random-weight graphs compute something non-trivial and parity means something."""
    generator = torch.Generator().manual_seed(SEEDS["fill"])
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.detach().any():
                values = torch.randn(parameter.shape, generator=generator) * scale
                parameter.copy_(values.to(parameter.dtype))


def _vae(config: SdxlGraphsConfig):
    from diffusers import AutoencoderKL

    from unildiff.bench.sdxl_size import sdxl_vae_config

    dtype = DTYPES[config.vae_dtype]
    return _seeded(SEEDS["vae"], dtype, lambda: AutoencoderKL(**sdxl_vae_config(config.width_divisor))).eval()


def synthetic_lq(batch: int, size: int) -> torch.Tensor:
    """Smooth synthetic LQ images, [-1, 1], (batch, 3, size, size) (the same for every process)."""
    generator = torch.Generator().manual_seed(2)
    coarse = torch.rand(batch, 3, max(size // 16, 1), max(size // 16, 1), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (image * 2 - 1).clamp(-1, 1)


@dataclass
class BuiltGraph:
    """One graph ready to export: the module (float32 IO), IO names and input sets (first = export set)."""

    name: GraphName
    module: nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_sets: tuple[tuple[torch.Tensor, ...], ...]
    parameters: int


def _lq_encoder(config: SdxlGraphsConfig, sets: list[torch.Tensor]) -> BuiltGraph:
    from unildiff.bench.sdxl_size import SDXL_DAFF
    from unildiff.models.conditioner import LQConditioner
    from unildiff.models.lq_encoder import LQEncoder

    vae = _vae(config)
    # a copy of the VAE encoder trunk, as training starts, giving the sdxl preset's f^LQ scales
    lq_encoder = LQEncoder.from_vae(vae, num_scales=SDXL_DAFF.lq_scales).eval()
    conditioner = LQConditioner(lq_encoder, vae).eval()
    levels = len(vae.config.block_out_channels)
    names = ("lq",)
    module = CastGraph(conditioner, DTYPES[config.vae_dtype], names)
    return BuiltGraph(
        GraphName.LQ_ENCODER,
        module,
        names,
        ("lq_features", "lq_latent", *(f"skip_{index}" for index in range(levels))),
        tuple((lq,) for lq in sets),
        sum(p.numel() for p in lq_encoder.parameters()) + sum(p.numel() for p in vae.encoder.parameters()),
    )


def _denoiser(config: SdxlGraphsConfig, sets: list[torch.Tensor]) -> BuiltGraph:
    from diffusers import UNet2DConditionModel

    from unildiff.bench.sdxl_size import SDXL_DAFF, sdxl_unet_config, sdxl_vae_config
    from unildiff.models.daff import DAFF
    from unildiff.models.denoiser import UniLDiffDenoiser
    from unildiff.models.lq_encoder import lq_scale_channels, stacked_channels
    from unildiff.models.text import make_time_ids

    dtype = DTYPES[config.denoiser_dtype]
    unet_config = sdxl_unet_config(config.width_divisor)
    unet = _seeded(SEEDS["unet"], dtype, lambda: UNet2DConditionModel(**unet_config)).eval()
    vae_widths = sdxl_vae_config(config.width_divisor)["block_out_channels"]
    scales = lq_scale_channels(vae_widths, SDXL_DAFF.lq_scales)  # LQEncoder.scale_channels
    lq_channels = stacked_channels(scales)  # LQEncoder.out_channels
    daff = _seeded(SEEDS["daff"], dtype, lambda: DAFF.from_unet(unet, SDXL_DAFF, scales)).eval()
    _fill_zeros(daff)
    denoiser = UniLDiffDenoiser(unet, daff).eval()
    names = ("sample", "timestep", "lq_features", "encoder_hidden_states", "text_embeds", "time_ids")
    time_dims = 6 * unet.config.addition_time_embed_dim
    pooled = unet.config.projection_class_embeddings_input_dim - time_dims
    generator = torch.Generator().manual_seed(3)
    input_sets = []
    for lq, batch in zip(sets, (2, 1), strict=True):
        side = lq.shape[-1]
        latent = (batch, unet.config.in_channels, side // 8, side // 8)
        input_sets.append(
            (
                torch.randn(latent, generator=generator),
                torch.full((batch,), 499.0),
                torch.randn((batch, lq_channels, side // 8, side // 8), generator=generator),
                torch.randn((batch, PROMPT_TOKENS, unet.config.cross_attention_dim), generator=generator),
                torch.randn((batch, pooled), generator=generator),
                make_time_ids(side, side, batch),
            )
        )
    return BuiltGraph(
        GraphName.DENOISER,
        CastGraph(denoiser, dtype, names),
        names,
        ("noise_pred",),
        tuple(input_sets),
        sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in daff.parameters()),
    )


def _decoder(config: SdxlGraphsConfig, sets: list[torch.Tensor]) -> BuiltGraph:
    from unildiff.bench.sdxl_size import SDXL_DAEM
    from unildiff.models.conditioner import encode_with_skips
    from unildiff.models.decoder import DAEMDecoder

    vae = _vae(config)
    dtype = DTYPES[config.vae_dtype]
    decoder = _seeded(SEEDS["decoder"], dtype, lambda: DAEMDecoder.from_vae(vae, SDXL_DAEM)).eval()
    _fill_zeros(decoder)
    levels = len(vae.config.block_out_channels)
    names = ("latents", *(f"skip_{index}" for index in range(levels)))
    input_sets = []
    with torch.no_grad():
        for lq in sets:  # the decoder's inputs as the LQ encoder graph gives them (same seeded VAE)
            latent, skips = encode_with_skips(vae, lq.to(dtype))
            input_sets.append((latent.float(), *(skip.float() for skip in skips)))

    class Decode(nn.Module):
        def __init__(self, decoder: nn.Module) -> None:
            super().__init__()
            self.decoder = decoder

        def forward(self, latents: torch.Tensor, *skips: torch.Tensor) -> torch.Tensor:
            return self.decoder(latents, tuple(skips)).sample

    return BuiltGraph(
        GraphName.DECODER,
        CastGraph(Decode(decoder).eval(), dtype, names),
        names,
        ("image",),
        tuple(input_sets),
        sum(p.numel() for p in decoder.parameters()),
    )


def build_graph(name: GraphName, config: SdxlGraphsConfig) -> BuiltGraph:
    """The torch module and input sets of one restoration graph (batch 2 at ``image_size``, then batch 1
    at ``second_size``)."""
    sets = [synthetic_lq(2, config.image_size), synthetic_lq(1, config.second_size)]
    builders = {GraphName.LQ_ENCODER: _lq_encoder, GraphName.DENOISER: _denoiser, GraphName.DECODER: _decoder}
    if name not in builders:
        raise ValueError(f"{name.value} is not a restoration graph")
    return builders[name](config, sets)


def pixel_multiple(config: SdxlGraphsConfig) -> int:
    """Image sides the SDXL-size graphs accept: VAE factor 8 × the UNet's down-sampling (4) × DAFF patch 1."""
    from unildiff.bench.sdxl_size import sdxl_unet_config, sdxl_vae_config

    vae_factor = 2 ** (len(sdxl_vae_config(config.width_divisor)["block_out_channels"]) - 1)
    unet_factor = 2 ** (len(sdxl_unet_config(config.width_divisor)["block_out_channels"]) - 1)
    return vae_factor * unet_factor
