"""The torch backend: the trained model's modules behind the ``RestorationGraphs`` protocol."""

from __future__ import annotations

import dataclasses

import torch

from unildiff.backends import LQEncoding

#: ``--dtype`` / ``bench.dtype`` names of the torch backend's compute types.
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchGraphs:
    """:class:`~unildiff.backends.RestorationGraphs` on torch modules.

    Args:
        conditioner: ``LQConditioner``: lq → (lq_features, lq_latent, *skips).
        denoiser: ``UniLDiffDenoiser`` (UNet + DAFF).
        vae: the prior's VAE (used for the plain decoder and its scaling factor).
        decoder: ``DAEMDecoder``; ``None`` decodes with the plain VAE decoder (the ablation).
        pixel_multiple: padded image sides are multiples of this.
    """

    def __init__(self, conditioner, denoiser, vae, decoder=None, pixel_multiple: int = 64):
        self.conditioner = conditioner
        self.denoiser = denoiser
        self.vae = vae
        self.decoder = decoder
        self.pixel_multiple = pixel_multiple

    @classmethod
    def from_model(cls, model, plain_decoder: bool = False) -> TorchGraphs:
        """Graphs of a ``UniLDiffModel`` (its one shared denoiser); ``plain_decoder`` = VAE decoder.

        The modules stay on the model's device (``open_backend`` moves the model first when asked).
        """
        vae, unet = model.prior.vae, model.unet
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        unet_factor = 2 ** (len(unet.config.block_out_channels) - 1)
        patch = int(model.daff.config.get("patch_size", 1) or 1)
        conditioner = model.conditioner().eval()
        denoiser = model.denoiser().eval()
        decoder = None if plain_decoder else model.decoder.eval()
        return cls(conditioner, denoiser, vae.eval(), decoder, vae_factor * unet_factor * patch)

    def with_plain_decoder(self) -> TorchGraphs:
        """The same graphs decoding with the plain VAE decoder (shares every module)."""
        return TorchGraphs(self.conditioner, self.denoiser, self.vae, None, self.pixel_multiple)

    @torch.no_grad()
    def encode_lq(self, lq: torch.Tensor) -> LQEncoding:
        """Encode ``lq`` [-1, 1], (B, 3, H, W)."""
        lq_features, lq_latent, *skips = self.conditioner(lq)
        return LQEncoding(lq_features, lq_latent, tuple(skips))

    @torch.no_grad()
    def denoise(self, sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids):
        """Predict noise (B, 4, h, w); see :class:`~unildiff.backends.RestorationGraphs`."""
        return self.denoiser(sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, skips: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decode scaled latents to [-1, 1], (B, 3, H, W) with DAEM (or the plain VAE decoder)."""
        if self.decoder is None:
            return self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return self.decoder(latents, skips).sample


class CastGraphs:
    """Torch graphs run in ``dtype`` (bf16/fp16 on CUDA): inputs cast in, outputs cast back to float32.

    Used by ``unildiff restore --dtype`` and ``unildiff bench --dtype``. Attention runs through diffusers'
    default processors, i.e. torch's ``scaled_dot_product_attention`` (flash / memory-efficient kernels on
    CUDA in half precision).
    """

    def __init__(self, graphs, dtype: torch.dtype) -> None:
        self.graphs = graphs
        self.dtype = dtype
        self.pixel_multiple = graphs.pixel_multiple
        for module in (graphs.conditioner, graphs.denoiser, graphs.decoder or graphs.vae):
            module.to(dtype)

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.dtype) if tensor.is_floating_point() else tensor

    def encode_lq(self, lq):
        encoding = self.graphs.encode_lq(self._cast(lq))
        return dataclasses.replace(
            encoding,
            lq_features=encoding.lq_features.float(),
            lq_latent=encoding.lq_latent.float(),
            skips=tuple(skip.float() for skip in encoding.skips),
        )

    def denoise(self, *args):
        return self.graphs.denoise(*(self._cast(argument) for argument in args)).float()

    def decode(self, latents, skips):
        return self.graphs.decode(self._cast(latents), tuple(self._cast(skip) for skip in skips)).float()
