"""The torch backend: the trained model's modules behind the ``RestorationGraphs`` protocol."""

from __future__ import annotations

import torch

from unildiff.backends import LQEncoding


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
