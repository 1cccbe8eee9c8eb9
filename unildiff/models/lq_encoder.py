"""The trainable LQ encoder: a copy of the prior's VAE encoder without its final norm/act/conv.

It turns the LQ image into the degradation features f^LQ that DAFF aligns with the noisy latent (paper
"Method", Fig. 2: a "pre-trained VAE encoder … extracting multi-scale features f^LQ"). It is frozen in
stage 1a and trained in stage 1b.

Scales (``num_scales`` = ``daff.lq_scales``, coarsest first; L encoder levels, f = 2^(L-1) the VAE factor):

- scale 0: the mid-block output, (B, C_{L-1}, H/f, W/f), the single-scale f^LQ;
- scale s ≥ 1: level j = L-1-s, down block j's output before its down-sampler, (B, C_j, H/2^j, W/2^j), the
  deepest map the trunk has at that resolution (the DAEM skips take the same point of the frozen VAE).

The scales travel as one tensor on the latent grid: scale s is rearranged by a space-to-depth
(``pixel_unshuffle`` by r = 2^s: lossless, no weights) to (B, C_j·4^s, H/f, W/f) and the scales are
concatenated on the channel axis. Tiling, the exported graphs and the backends therefore carry one
``lq_features`` input whose channel count is :attr:`LQEncoder.out_channels`; DAFF splits it back by scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import Encoder

from unildiff.errors import ConfigError


def lq_scale_channels(block_out_channels: tuple[int, ...], num_scales: int) -> tuple[int, ...]:
    """Native channels C of each f^LQ scale, coarsest first (scale 0 = the mid block).

    Args:
        block_out_channels: The VAE encoder's block widths, finest level first (L levels).
        num_scales: ``daff.lq_scales``, in [1, L].

    Raises:
        ConfigError: ``num_scales`` outside [1, L], naming ``daff.lq_scales``.
    """
    levels = len(block_out_channels)
    if not 1 <= num_scales <= levels:
        raise ConfigError(
            f"daff.lq_scales must be in [1, {levels}] for a VAE encoder with {levels} levels, "
            f"got {num_scales}"
        )
    return (block_out_channels[-1], *(block_out_channels[levels - 1 - s] for s in range(1, num_scales)))


def stacked_channels(scale_channels: tuple[int, ...]) -> int:
    """Channels of the stacked f^LQ: scale s contributes C_s·4^s (space-to-depth by 2^s)."""
    return sum(channels * 4**scale for scale, channels in enumerate(scale_channels))


class LQEncoder(ModelMixin, ConfigMixin):
    """VAE-encoder trunk (conv_in, down blocks, mid block) giving f^LQ at latent resolution.

    The configuration mirrors the VAE encoder's (``AutoencoderKL.config``), so :meth:`from_vae` can copy
    the weights one to one (state-dict keys ``encoder.*`` equal the VAE's). ``num_scales`` is the number
    of encoder resolutions in f^LQ (module docstring); 1 is the mid-block map alone, and a saved encoder
    without the key is single-scale.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",) * 4,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        mid_block_add_attention: bool = True,
        num_scales: int = 1,
    ):
        super().__init__()
        lq_scale_channels(tuple(block_out_channels), num_scales)  # validates num_scales
        self.encoder = Encoder(
            in_channels=in_channels,
            out_channels=4,
            down_block_types=tuple(down_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            double_z=True,
            mid_block_add_attention=mid_block_add_attention,
        )
        # f^LQ ends at the mid-block output: the final norm, activation and conv_out are not in the trunk.
        del self.encoder.conv_norm_out
        del self.encoder.conv_act
        del self.encoder.conv_out

    @property
    def scale_channels(self) -> tuple[int, ...]:
        """Native channels of each scale, coarsest first (``(512,)`` for single-scale SDXL)."""
        return lq_scale_channels(tuple(self.config.block_out_channels), self.config.num_scales)

    @property
    def out_channels(self) -> int:
        """Channels C_lq of the stacked f^LQ: the last block width (512 for SDXL) when single-scale."""
        return stacked_channels(self.scale_channels)

    @classmethod
    def from_vae(cls, vae: AutoencoderKL, num_scales: int = 1) -> LQEncoder:
        """A trainable copy of ``vae``'s encoder trunk (weights copied, ``vae`` untouched).

        Args:
            vae: The prior's VAE.
            num_scales: ``daff.lq_scales``: encoder resolutions in f^LQ (module docstring).
        """
        config = vae.config
        lq_encoder = cls(
            in_channels=config.in_channels,
            down_block_types=tuple(config.down_block_types),
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            act_fn=config.act_fn,
            mid_block_add_attention=config.get("mid_block_add_attention", True),
            num_scales=num_scales,
        )
        source = vae.state_dict()
        own = lq_encoder.state_dict()
        lq_encoder.load_state_dict({key: source[key].detach().clone() for key in own}, strict=True)
        return lq_encoder.to(vae.device)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """Encode the LQ image.

        Args:
            lq: LQ image, [-1, 1], (B, 3, H, W) with H and W multiples of the VAE's factor f.

        Returns:
            f^LQ, (B, :attr:`out_channels`, H/f, W/f), unbounded: the scales stacked on the channel axis,
            coarsest first (module docstring); single-scale, the mid-block output (B, C_{L-1}, H/f, W/f).
        """
        hidden = self.encoder.conv_in(lq)
        if self.config.num_scales == 1:
            for down_block in self.encoder.down_blocks:
                hidden = down_block(hidden)
            return self.encoder.mid_block(hidden)
        levels = len(self.encoder.down_blocks)
        finest = levels - self.config.num_scales  # level of the finest scale kept
        finer = []  # levels finest … L-2, finest first
        for level, down_block in enumerate(self.encoder.down_blocks):
            for resnet in down_block.resnets:  # DownEncoderBlock2D.forward, split at its down-sampler
                hidden = resnet(hidden, temb=None)
            if finest <= level < levels - 1:
                finer.append(F.pixel_unshuffle(hidden, 2 ** (levels - 1 - level)))
            for downsampler in down_block.downsamplers or ():
                hidden = downsampler(hidden)
        return torch.cat([self.encoder.mid_block(hidden), *reversed(finer)], dim=1)
