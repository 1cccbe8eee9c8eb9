"""The VAE decoder with DAEM blocks after chosen up blocks (paper eqs. 7-8, Fig. 4), trained in stage 2.

Skip levels: level j is the frozen VAE encoder's down block j output *before* its down-sampler, i.e.
(B, block_out_channels[j], H/2^j, W/2^j); :class:`~unildiff.models.conditioner.LQConditioner` returns all
levels in this order. Decoder up block i ends at resolution H/2^j(i) with
j(i) = L - 1 - min(i + 1, L - 1) (L = number of blocks), and the DAEM block after it fuses skip level j(i).
For SDXL and ``tiny`` (L = 4): up block 0 → level 2 (H/4), 1 → level 1 (H/2), 2 and 3 → level 0 (H).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import Decoder
from diffusers.utils import BaseOutput
from torch import nn

from unildiff.errors import ConfigError
from unildiff.models.config import DAEMConfig
from unildiff.models.daem import DAEMBlock
from unildiff.models.load_balancing import load_balancing_loss


@dataclass
class DecoderOutput(BaseOutput):
    """Output of :class:`DAEMDecoder`.

    Attributes:
        sample: Decoded image, nominally [-1, 1] (not clamped), (B, 3, H, W).
        aux_loss: Load-balancing loss L_aux averaged over DAEM blocks, 0-dim (zero in eval mode).
        expert_usage: Fraction of router tokens sent to each expert, averaged over blocks, (E,).
    """

    sample: torch.Tensor
    aux_loss: torch.Tensor
    expert_usage: torch.Tensor


def _call(module: nn.Module, *args: torch.Tensor):
    return module(*args)


def skip_level(up_block: int, num_levels: int) -> int:
    """The encoder skip level whose resolution equals decoder up block ``up_block``'s output."""
    return num_levels - 1 - min(up_block + 1, num_levels - 1)


def block_router_window(window: int, level: int) -> int:
    """The router window, in pixels of its own feature map, of a DAEM block at skip ``level``.

    ``daem.window`` is in output-image pixels; a block at level j (resolution H/2^j) routes windows of
    ``window / 2^j`` feature pixels. A window smaller than 2^j routes every feature pixel of that block
    alone (one router token per position: ``daem.window: 1`` routes per token in every block).
    0 routes the whole map.

    Raises:
        ConfigError: a window of at least 2^j that is not a multiple of it.
    """
    scale = 2**level
    if window == 0:
        return 0
    if window < scale:
        return 1
    if window % scale:
        raise ConfigError(
            f"daem.window={window} must be a multiple of {scale} (skip level {level}) or below it"
        )
    return window // scale


class DAEMDecoder(ModelMixin, ConfigMixin):
    """``post_quant_conv`` + VAE ``Decoder`` (same keys as ``AutoencoderKL``) + DAEM blocks.

    At initialisation (zero DAEM scales) it decodes exactly like ``vae.decode``. With diffusers'
    ``enable_gradient_checkpointing()`` the mid block, the up blocks and the DAEM blocks recompute their
    activations in backward (``train.gradient_checkpointing``).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        out_channels: int = 3,
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 4,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        latent_channels: int = 4,
        mid_block_add_attention: bool = True,
        use_post_quant_conv: bool = True,
        scaling_factor: float = 0.13025,
        shift_factor: float | None = None,
        daem_up_blocks: tuple[int, ...] = (1, 2),
        num_experts: int = 4,
        top_k: int = 1,
        window: int = 0,
        num_heads: int = 1,
    ):
        super().__init__()
        DAEMConfig(num_experts, top_k, window, tuple(daem_up_blocks), num_heads)  # validates (__post_init__)
        num_levels = len(block_out_channels)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
        )
        reversed_channels = list(reversed(block_out_channels))
        blocks = {}
        for up_block in daem_up_blocks:
            if not 0 <= up_block < len(up_block_types):
                raise ConfigError(
                    f"daem.up_blocks holds {up_block}, the decoder has {len(up_block_types)} up blocks"
                )
            level = skip_level(up_block, num_levels)
            block_window = block_router_window(window, level)
            blocks[str(up_block)] = DAEMBlock(
                channels=reversed_channels[up_block],
                skip_channels=block_out_channels[level],
                num_experts=num_experts,
                top_k=top_k,
                window=block_window,
                num_heads=num_heads,
            )
        self.daem_blocks = nn.ModuleDict(blocks)

    @classmethod
    def from_vae(cls, vae: AutoencoderKL, daem_config: DAEMConfig, seed: int = 0) -> DAEMDecoder:
        """Copy ``vae``'s post_quant_conv and decoder, add fresh DAEM blocks from ``daem_config``.

        Args:
            vae: The prior's VAE (its decoder weights are copied).
            daem_config: The ``daem`` settings.
            seed: Seed of the fresh DAEM blocks' initialisation; the global RNG is left as it was.
        """
        config = vae.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            decoder = cls(
                out_channels=config.out_channels,
                up_block_types=tuple(config.up_block_types),
                block_out_channels=tuple(config.block_out_channels),
                layers_per_block=config.layers_per_block,
                norm_num_groups=config.norm_num_groups,
                act_fn=config.act_fn,
                latent_channels=config.latent_channels,
                mid_block_add_attention=config.get("mid_block_add_attention", True),
                use_post_quant_conv=config.get("use_post_quant_conv", True),
                scaling_factor=config.scaling_factor,
                shift_factor=config.get("shift_factor", None),
                daem_up_blocks=tuple(daem_config.up_blocks),
                num_experts=daem_config.num_experts,
                top_k=daem_config.top_k,
                window=daem_config.window,
                num_heads=daem_config.num_heads,
            )
        source = vae.state_dict()
        copied = {
            key: value.detach().clone()
            for key, value in source.items()
            if key.startswith(("decoder.", "post_quant_conv."))
        }
        missing, unexpected = decoder.load_state_dict(copied, strict=False)
        if unexpected or any(not key.startswith("daem_blocks.") for key in missing):
            raise ConfigError(
                f"VAE decoder weights do not fit DAEMDecoder (missing {missing[:3]}, extra {unexpected[:3]})"
            )
        return decoder.to(vae.device)

    def forward(
        self,
        latents: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        routing_generator: torch.Generator | None = None,
    ) -> DecoderOutput:
        """Decode scaled latents with DAEM refinement.

        Args:
            latents: Scaled latents (``mode() * scaling_factor``), (B, 4, H/8, W/8).
            skips: The frozen VAE encoder's features on the LQ image, one per level (see module docstring),
                level j (B, block_out_channels[j], H/2^j, W/2^j).
            routing_generator: In training mode, the generator of the routers' noise ξ (eq. 7), given by
                the training objective; it is drawn here, outside any gradient-checkpointed call, so that
                a recomputation sees the same noise. ``None`` (and always in eval mode): no noise.

        Returns:
            :class:`DecoderOutput` with sample [-1, 1] (B, 3, H, W), aux_loss (0-dim), expert_usage (E,).
        """
        if len(skips) != len(self.config.block_out_channels):
            raise ValueError(
                f"DAEMDecoder needs {len(self.config.block_out_channels)} skip levels, got {len(skips)}"
            )
        hidden = latents / self.config.scaling_factor
        if self.config.shift_factor is not None:
            hidden = hidden + self.config.shift_factor
        if self.post_quant_conv is not None:
            hidden = self.post_quant_conv(hidden)
        decoder = self.decoder
        # diffusers' switch lives on the wrapped Decoder; its own forward is not used here.
        checkpointed = torch.is_grad_enabled() and decoder.gradient_checkpointing
        call = decoder._gradient_checkpointing_func if checkpointed else _call
        hidden = call(decoder.mid_block, decoder.conv_in(hidden))
        num_levels = len(self.config.block_out_channels)
        losses, usages = [], []
        for index, up_block in enumerate(decoder.up_blocks):
            hidden = call(up_block, hidden)
            if str(index) in self.daem_blocks:
                skip = skips[skip_level(index, num_levels)]
                block = self.daem_blocks[str(index)]
                noise = None
                if self.training and routing_generator is not None:
                    noise = torch.randn(
                        block.router_shape(hidden),
                        generator=routing_generator,
                        device=hidden.device,
                        dtype=torch.float32,
                    )
                hidden, clean_logits, noisy_logits, selected = call(block, hidden, skip, noise)
                usages.append(selected.mean(dim=0))
                if self.training:
                    losses.append(
                        load_balancing_loss(clean_logits, noisy_logits, 1.0 / block.num_experts, block.top_k)
                    )
        sample = decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(hidden)))
        aux_loss = torch.stack(losses).mean() if losses else sample.new_zeros(())
        if usages:
            expert_usage = torch.stack(usages).mean(dim=0)
        else:
            expert_usage = sample.new_zeros(self.config.num_experts)
        return DecoderOutput(sample=sample, aux_loss=aux_loss, expert_usage=expert_usage)
