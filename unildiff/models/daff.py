"""DAFF: Degradation-Aware Feature Fusion (paper eqs. 1-5), built from diffusers' FLUX blocks.

Shapes (h, w = latent size, p = patch size, N = h*w/p², D = width)::

    conv_in output (B, C, h, w) ──conv p×p/p──▶ HQ tokens (B, N, D) ─┐
    f^LQ (B, C_lq, h, w) ────────conv p×p/p──▶ LQ tokens (B, N, D) ─┤ shared 2-D rotary ids (row, col)
      scale s ≥ 1 (lq_scales > 1) ─zero-init conv p×p/p─▶ + (summed)  │
                                                                     ▼
        N × FluxTransformerBlock (double stream, eqs. 1-2; LQ = context stream, HQ = image stream)
        M × FluxSingleTransformerBlock over [LQ ‖ HQ] (eqs. 3-5) → f^align
        HQ half + cross-attention to the text embedding c (the paper's "content embedding")
        LayerNorm → zero-initialised Linear(D, C·p²) → un-patchify → residual (B, C, h, w)

With ``lq_scales`` > 1, f^LQ stacks the LQ encoder's scales on the channel axis (scale s space-to-depth
by 2^s onto the latent grid, :mod:`unildiff.models.lq_encoder`); each scale has its own patch embedding,
and the finer scales' embeddings start at zero, so the LQ tokens start as the single-scale ones. A p×p/p
conv over scale s's space-to-depth map is a (2^s·p)×(2^s·p) conv with stride 2^s·p over the map at its
own resolution: every scale lands on the same token grid (paper Fig. 2, "multi-scale features f^LQ").

All blocks are modulated by DAFF's own timestep embedding ``temb``. Because the output projection starts at
zero, the residual is exactly zero at initialisation and the UNet computes what the prior computes.

``variant`` selects the fusion blocks of the paper's Table 4: ``both`` (N double + M single, the paper's
DAFF), ``double`` (the N double-stream blocks only), ``single`` (the M single-stream blocks only) and
``rsa`` (N + M CLIP-style residual self-attention blocks over [LQ ‖ HQ], with no timestep modulation;
:class:`ResidualAttentionBlock`). The embeddings, the text cross-attention and the zero-initialised output
are the same in every variant.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, apply_rotary_emb
from diffusers.models.transformers.transformer_flux import (
    FluxPosEmbed,
    FluxSingleTransformerBlock,
    FluxTransformerBlock,
)
from torch import nn

from unildiff.errors import ConfigError
from unildiff.models.config import DAFFConfig

TIME_PROJECTION_CHANNELS = 256


class ResidualAttentionBlock(nn.Module):
    """CLIP's residual attention block (Radford et al. 2021), the paper's RSA fusion (Table 4).

    ``x + attn(LN(x))`` then ``x + MLP(LN(x))`` over the joint sequence [LQ ‖ HQ], with the same 2-D
    rotary positions as the FLUX blocks and no timestep input: what the RSA row lacks against DAFF is the
    timestep-aware modulation and the separate per-stream weights.

    Args:
        width: Token width D.
        num_heads: Attention heads.
        head_dim: Width of one head (D / heads).
    """

    def __init__(self, width: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attention_out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width)
        )

    def forward(self, tokens: torch.Tensor, rotary: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(B, 2N, D) → (B, 2N, D); ``rotary`` the (cos, sin) of the 2N positions."""
        query, key, value = (
            self.qkv(self.norm1(tokens)).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(2)
        )
        query = apply_rotary_emb(query, rotary, sequence_dim=1)
        key = apply_rotary_emb(key, rotary, sequence_dim=1)
        attended = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        )  # (B, heads, 2N, head_dim)
        tokens = tokens + self.attention_out(attended.transpose(1, 2).flatten(2))
        return tokens + self.mlp(self.norm2(tokens))


class DAFF(ModelMixin, ConfigMixin):
    """Aligns f^LQ with the noisy latent's conv_in features at every timestep (paper eqs. 1-5).

    Args:
        hidden_channels: C, the UNet's conv_in output channels (``unet.config.block_out_channels[0]``).
        lq_channels: Channels of f^LQ's scale 0, the LQ encoder's mid-block map (all of f^LQ when
            single-scale).
        text_dim: Width of the text embedding c (``unet.config.cross_attention_dim``).
        width: Token width D.
        num_double_blocks: N double-stream blocks.
        num_single_blocks: M single-stream blocks.
        num_heads: Attention heads (head width D / heads, a multiple of 4 for 2-D rotary positions).
        patch_size: Latent patch side p per token.
        rope_theta: Rotary base frequency.
        normalize_lq: GroupNorm f^LQ before its embedding (``tiny`` only: the VAE trunk's f^LQ has a std
            of ~16 against ~0.7 for the conv_in features; the paper feeds it as is).
        lq_residual: Add the LQ stream's output tokens to the HQ stream at the same positions before the
            zero-initialised output projection (``tiny`` only). The paper does not say how the 2N fused
            tokens become N; this per-position path lets a small model read f^LQ (docs/model.md).
        fusion: ``False`` for the ablation without DAFF: :meth:`forward` returns zeros and
            :class:`~unildiff.models.denoiser.UniLDiffDenoiser` leaves the UNet bare.
        variant: Fusion blocks (paper Table 4): ``both`` | ``double`` | ``single`` | ``rsa`` (module
            docstring). A saved DAFF without the key is ``both``.
        lq_scales: ``daff.lq_scales``: scales in f^LQ (module docstring). A saved DAFF without the key is
            single-scale.
        lq_fine_channels: Native channels C_s of scales s = 1 … lq_scales-1 (``LQEncoder.scale_channels``
            after the first); scale s occupies C_s·4^s channels of f^LQ.
    """

    @register_to_config
    def __init__(
        self,
        hidden_channels: int = 320,
        lq_channels: int = 512,
        text_dim: int = 2048,
        width: int = 64,
        num_double_blocks: int = 1,
        num_single_blocks: int = 1,
        num_heads: int = 4,
        patch_size: int = 1,
        rope_theta: int = 10000,
        normalize_lq: bool = False,
        lq_residual: bool = False,
        fusion: bool = True,
        variant: str = "both",
        lq_scales: int = 1,
        lq_fine_channels: tuple[int, ...] = (),
    ):
        super().__init__()
        # validates (__post_init__): diffusers' from_pretrained calls __init__ with the saved keys
        DAFFConfig(
            width, num_double_blocks, num_single_blocks, num_heads, patch_size, normalize_lq, lq_residual,
            fusion, variant, lq_scales,
        )  # fmt: skip
        if len(lq_fine_channels) != lq_scales - 1:
            raise ConfigError(
                f"daff.lq_scales={lq_scales} needs {lq_scales - 1} finer LQ scale widths, "
                f"got {len(lq_fine_channels)}"
            )
        doubles = num_double_blocks if variant in ("both", "double") else 0
        singles = num_single_blocks if variant in ("both", "single") else 0
        head_dim = width // num_heads
        self.lq_norm = nn.GroupNorm(1, lq_channels) if normalize_lq else None
        self.hq_embed = nn.Conv2d(hidden_channels, width, kernel_size=patch_size, stride=patch_size)
        self.lq_embed = nn.Conv2d(lq_channels, width, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = FluxPosEmbed(theta=rope_theta, axes_dim=[head_dim // 2, head_dim // 2])
        # RSA has no timestep input (what its Table 4 row measures), so it has no timestep embedding.
        timed = variant != "rsa"
        self.time_proj = Timesteps(TIME_PROJECTION_CHANNELS, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(TIME_PROJECTION_CHANNELS, width) if timed else None
        self.double_blocks = nn.ModuleList(
            [FluxTransformerBlock(width, num_heads, head_dim) for _ in range(doubles)]
        )
        self.single_blocks = nn.ModuleList(
            [FluxSingleTransformerBlock(width, num_heads, head_dim) for _ in range(singles)]
        )
        rsa_depth = num_double_blocks + num_single_blocks if variant == "rsa" else 0
        self.rsa_blocks = nn.ModuleList(
            [ResidualAttentionBlock(width, num_heads, head_dim) for _ in range(rsa_depth)]
        )
        self.text_norm = nn.LayerNorm(width)
        self.text_attention = Attention(
            query_dim=width, cross_attention_dim=text_dim, heads=num_heads, dim_head=head_dim, out_bias=True
        )
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, hidden_channels * patch_size * patch_size)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        # Built last, so the modules above draw the same initial weights as with lq_scales=1.
        self.lq_scale_norms, self.lq_scale_embeds = self._finer_scale_embeddings(
            lq_fine_channels, width, patch_size, normalize_lq
        )

    @staticmethod
    def _finer_scale_embeddings(
        fine_channels: tuple[int, ...], width: int, patch_size: int, normalize_lq: bool
    ) -> tuple[nn.ModuleList, nn.ModuleList]:
        """Per finer scale s: a norm (GroupNorm with ``normalize_lq``, else identity) and a zero-initialised
        p×p/p patch embedding of its C_s·4^s space-to-depth channels; both lists empty when single-scale."""
        norms, embeds = nn.ModuleList(), nn.ModuleList()
        for scale, channels in enumerate(fine_channels, start=1):
            stacked = channels * 4**scale
            norms.append(nn.GroupNorm(1, stacked) if normalize_lq else nn.Identity())
            embed = nn.Conv2d(stacked, width, kernel_size=patch_size, stride=patch_size)
            nn.init.zeros_(embed.weight)
            nn.init.zeros_(embed.bias)
            embeds.append(embed)
        return norms, embeds

    @classmethod
    def from_unet(
        cls, unet: nn.Module, config: DAFFConfig, lq_channels: int | tuple[int, ...], seed: int | None = None
    ) -> DAFF:
        """A fresh DAFF from the ``daff`` params, sized for ``unet`` and the LQ encoder's features.

        Args:
            unet: The UNet DAFF hooks into (its conv_in width and text width fix DAFF's sizes).
            config: The ``daff`` settings.
            lq_channels: Native channels of each f^LQ scale, coarsest first (``LQEncoder.scale_channels``);
                an ``int`` is one scale. Their number must be ``config.lq_scales``.
            seed: Seed of the weight initialisation, drawn inside ``torch.random.fork_rng`` so the global
                RNG is left as it was (the ``stage1a`` stage); ``None`` draws from the global RNG as it is.
        """
        scales = (lq_channels,) if isinstance(lq_channels, int) else tuple(lq_channels)
        if len(scales) != config.lq_scales:
            raise ConfigError(
                f"daff.lq_scales={config.lq_scales} but the LQ encoder gives {len(scales)} scale(s) "
                "(build it with LQEncoder.from_vae(vae, num_scales=daff.lq_scales))"
            )
        sizes = {
            "hidden_channels": unet.config.block_out_channels[0],
            "lq_channels": scales[0],
            "text_dim": unet.config.cross_attention_dim,
            "lq_fine_channels": scales[1:],
        }
        if seed is None:
            return cls(**sizes, **dataclasses.asdict(config))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(**sizes, **dataclasses.asdict(config))

    def _rotary(self, grid_height: int, grid_width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        # Broadcast (not repeat_interleave) so the exported graph keeps h and w symbolic.
        rows = torch.arange(grid_height, device=device)[:, None].expand(grid_height, grid_width).reshape(-1)
        cols = torch.arange(grid_width, device=device)[None, :].expand(grid_height, grid_width).reshape(-1)
        ids = torch.stack([rows, cols], dim=-1)
        # The LQ and HQ streams share the same (row, col) ids: token i of each stream sees the same place.
        return self.pos_embed(torch.cat([ids, ids], dim=0))

    def forward(
        self,
        hidden: torch.Tensor,
        lq_features: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
    ) -> torch.Tensor:
        """Compute the residual added to the UNet's conv_in features.

        Args:
            hidden: UNet conv_in output, (B, C, h, w); h and w multiples of ``patch_size``.
            lq_features: f^LQ from :class:`~unildiff.models.lq_encoder.LQEncoder`, unbounded,
                (B, C_lq, h, w): ``lq_channels`` channels when single-scale, else the scales stacked on the
                channel axis, coarsest first, scale s as C_s·4^s space-to-depth channels.
            timestep: Diffusion timesteps, (B,) or a scalar tensor (broadcast to B).
            encoder_hidden_states: Text embedding c, (B, L, text_dim).

        Returns:
            residual, (B, C, h, w); exactly zero at initialisation, and always with ``fusion`` off.
        """
        if not self.config.fusion:
            return torch.zeros_like(hidden)
        batch, channels, _, _ = hidden.shape
        hq = self.hq_embed(hidden)
        lq = self._embed_lq(lq_features.to(hq.dtype))
        grid_height, grid_width = hq.shape[-2], hq.shape[-1]
        hq_tokens = hq.flatten(2).transpose(1, 2)
        lq_tokens = lq.flatten(2).transpose(1, 2)
        rotary = self._rotary(grid_height, grid_width, hidden.device)
        if self.rsa_blocks:
            lq_tokens, hq_tokens = self._residual_attention(lq_tokens, hq_tokens, rotary)
        else:
            lq_tokens, hq_tokens = self._flux_fusion(lq_tokens, hq_tokens, rotary, timestep, batch)
        shape = (batch, channels, grid_height, grid_width)
        return self._output(hq_tokens, lq_tokens, encoder_hidden_states, shape)

    def _embed_lq(self, lq_features: torch.Tensor) -> torch.Tensor:
        """f^LQ (B, C_lq, h, w) → LQ patch embeddings (B, D, h/p, w/p), summed over scales."""
        if not self.lq_scale_embeds:  # single-scale: the mid-block map alone
            if self.lq_norm is not None:
                lq_features = self.lq_norm(lq_features)
            return self.lq_embed(lq_features)
        widths = [self.config.lq_channels] + [
            channels * 4**scale for scale, channels in enumerate(self.config.lq_fine_channels, start=1)
        ]
        if lq_features.shape[1] != sum(widths):
            raise ValueError(
                f"DAFF with lq_scales={self.config.lq_scales} takes {sum(widths)} f^LQ channels, "
                f"got {lq_features.shape[1]} (is the LQ encoder built with the same daff.lq_scales?)"
            )
        coarsest, *finer = lq_features.split(widths, dim=1)
        if self.lq_norm is not None:
            coarsest = self.lq_norm(coarsest)
        lq = self.lq_embed(coarsest)
        for features, norm, embed in zip(finer, self.lq_scale_norms, self.lq_scale_embeds, strict=True):
            lq = lq + embed(norm(features))
        return lq

    def _flux_fusion(
        self,
        lq_tokens: torch.Tensor,
        hq_tokens: torch.Tensor,
        rotary: tuple[torch.Tensor, ...],
        timestep: torch.Tensor,
        batch: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The double- then single-stream blocks (eqs. 1-5), modulated by the timestep; (B, N, D) each."""
        timesteps = timestep.reshape(-1).expand(batch)
        temb = self.time_embedding(self.time_proj(timesteps).to(hq_tokens.dtype))
        for block in self.double_blocks:  # eqs. 1-2: separate modulation/QKV, joint attention, gated outputs
            lq_tokens, hq_tokens = block(
                hidden_states=hq_tokens, encoder_hidden_states=lq_tokens, temb=temb, image_rotary_emb=rotary
            )
        for block in self.single_blocks:  # eqs. 3-5: one stream over [LQ ‖ HQ]
            lq_tokens, hq_tokens = block(
                hidden_states=hq_tokens, encoder_hidden_states=lq_tokens, temb=temb, image_rotary_emb=rotary
            )
        return lq_tokens, hq_tokens

    def _residual_attention(
        self, lq_tokens: torch.Tensor, hq_tokens: torch.Tensor, rotary: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RSA (Table 4): the blocks over the joint sequence [LQ ‖ HQ], no timestep; (B, N, D) each."""
        tokens = torch.cat([lq_tokens, hq_tokens], dim=1)
        for block in self.rsa_blocks:
            tokens = block(tokens, rotary)
        lq_tokens, hq_tokens = tokens.split([lq_tokens.shape[1], hq_tokens.shape[1]], dim=1)
        return lq_tokens, hq_tokens

    def _output(
        self,
        hq_tokens: torch.Tensor,
        lq_tokens: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        shape: tuple[int, int, int, int],
    ) -> torch.Tensor:
        """Text cross-attention and the zero-initialised projection, shared by every variant.

        ``shape`` is (B, C, grid height, grid width); returns the residual (B, C, h, w).
        """
        batch, channels, grid_height, grid_width = shape
        patch = self.config.patch_size
        if self.config.lq_residual:  # per-position LQ path into the zero-initialised projection
            hq_tokens = hq_tokens + lq_tokens
        text = encoder_hidden_states.to(hq_tokens.dtype)
        hq_tokens = hq_tokens + self.text_attention(self.text_norm(hq_tokens), encoder_hidden_states=text)
        tokens = self.proj_out(self.norm_out(hq_tokens))  # (B, N, C·p²), zero at initialisation
        patches = tokens.transpose(1, 2).reshape(batch, channels * patch * patch, grid_height, grid_width)
        return F.pixel_shuffle(patches, patch)
