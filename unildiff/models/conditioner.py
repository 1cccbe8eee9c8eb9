"""LQ conditioning computed once per image: f^LQ, the LQ latent and the multi-scale skip features."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import nn

from unildiff.models.lq_encoder import LQEncoder


class LQConditioner(nn.Module):
    """Everything the denoiser and the DAEM decoder need from the LQ image, as one flat tuple (exportable).

    The frozen VAE encoder runs once and gives both the LQ latent and the skips: skip level j is down
    block j's output before its down-sampler, (B, block_out_channels[j], H/2^j, W/2^j), j = 0 … L-1
    (see :mod:`unildiff.models.decoder` for which DAEM block reads which level).

    Args:
        lq_encoder: The trainable LQ encoder giving f^LQ.
        vae: The prior's frozen VAE.
    """

    def __init__(self, lq_encoder: LQEncoder, vae: AutoencoderKL):
        super().__init__()
        self.lq_encoder = lq_encoder
        self.vae = vae

    def encode_with_skips(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:func:`encode_with_skips` with this conditioner's frozen VAE."""
        return encode_with_skips(self.vae, image)

    def forward(self, lq: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Condition on an LQ image.

        Args:
            lq: LQ image, [-1, 1], (B, 3, H, W), H and W multiples of 8.

        Returns:
            (lq_features (B, C_lq, H/8, W/8) (C_lq = ``LQEncoder.out_channels``: every f^LQ scale, stacked),
            lq_latent (B, 4, H/8, W/8) scaled, *skips).
        """
        lq_latent, skips = self.encode_with_skips(lq)
        return (self.lq_encoder(lq), lq_latent, *skips)


def encode_with_skips(
    vae: AutoencoderKL, image: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The VAE encoder's scaled latent ``mode() * scaling_factor`` and its skip features, in one pass.

    Args:
        vae: The prior's frozen VAE.
        image: [-1, 1], (B, 3, H, W).

    Returns:
        latent (B, latent_channels, H/f, W/f), f the VAE's factor, and the skips, one per encoder level:
        down block j's output before its down-sampler, (B, block_out_channels[j], H/2^j, W/2^j).
    """
    encoder = vae.encoder
    hidden = encoder.conv_in(image)
    skips = []
    for down_block in encoder.down_blocks:
        for resnet in down_block.resnets:
            hidden = resnet(hidden, temb=None)
        skips.append(hidden)
        if down_block.downsamplers is not None:
            for downsampler in down_block.downsamplers:
                hidden = downsampler(hidden)
    hidden = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(encoder.mid_block(hidden))))
    if vae.quant_conv is not None:
        hidden = vae.quant_conv(hidden)
    mean = hidden[:, : vae.config.latent_channels]  # the mode of the diagonal Gaussian
    config = vae.config
    if config.get("shift_factor", None) is not None:
        mean = mean - config.shift_factor
    return mean * config.scaling_factor, tuple(skips)
