"""The trainable LQ encoder: a copy of the prior's VAE encoder without its final norm/act/conv.

It turns the LQ image into the degradation features f^LQ that DAFF aligns with the noisy latent (paper
"Method", Fig. 2). It is frozen in stage 1a and trained in stage 1b.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import Encoder


class LQEncoder(ModelMixin, ConfigMixin):
    """VAE-encoder trunk (conv_in, down blocks, mid block) giving f^LQ at latent resolution.

    The configuration mirrors the VAE encoder's (``AutoencoderKL.config``), so :meth:`from_vae` can copy
    the weights one to one (state-dict keys ``encoder.*`` equal the VAE's).
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
    ):
        super().__init__()
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
        # f^LQ is the mid-block output: the final norm, activation and conv_out are not part of the trunk.
        del self.encoder.conv_norm_out
        del self.encoder.conv_act
        del self.encoder.conv_out

    @property
    def out_channels(self) -> int:
        """Channels C_lq of f^LQ (the VAE encoder's last block width: 512 for SDXL)."""
        return self.config.block_out_channels[-1]

    @classmethod
    def from_vae(cls, vae: AutoencoderKL) -> LQEncoder:
        """A trainable copy of ``vae``'s encoder trunk (weights copied, ``vae`` untouched)."""
        config = vae.config
        lq_encoder = cls(
            in_channels=config.in_channels,
            down_block_types=tuple(config.down_block_types),
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            act_fn=config.act_fn,
            mid_block_add_attention=config.get("mid_block_add_attention", True),
        )
        source = vae.state_dict()
        own = lq_encoder.state_dict()
        lq_encoder.load_state_dict({key: source[key].detach().clone() for key in own}, strict=True)
        return lq_encoder.to(vae.device)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """Encode the LQ image.

        Args:
            lq: LQ image, [-1, 1], (B, 3, H, W) with H and W multiples of the VAE's down-sampling factor.

        Returns:
            f^LQ, (B, C_lq, H/8, W/8) for SDXL-shaped VAEs.
        """
        hidden = self.encoder.conv_in(lq)
        for down_block in self.encoder.down_blocks:
            hidden = down_block(hidden)
        return self.encoder.mid_block(hidden)
