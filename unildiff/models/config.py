"""Typed model settings (params.yaml sections ``prior``, ``daff`` and ``daem``) and the ``tiny`` preset sizes.

Stage scripts build these frozen dataclasses with :func:`unildiff.params.load_section`; the library only ever
receives the dataclasses. Each checks its values in ``__post_init__`` and raises
:class:`~unildiff.errors.ConfigError` naming the param.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unildiff.errors import ConfigError

PRESETS = ("tiny", "sdxl")
#: DAFF fusion blocks (paper Table 4): both streams (the paper's DAFF), one of them, or residual attention.
DAFF_VARIANTS = ("both", "double", "single", "rsa")

#: Sizes of the ``tiny`` prior: SDXL's component set and wiring, scaled down so that a training step of the
#: VAE or the UNet on 2 CPU cores (batch 8, 64x64 crops) takes well under a second.
TINY: dict[str, Any] = {
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 3,  # factor 4 (SDXL: 4 blocks, factor 8)
        "up_block_types": ("UpDecoderBlock2D",) * 3,
        "block_out_channels": (32, 32, 32),
        "layers_per_block": 0,  # no resnets in the encoder's down blocks: learns faster (docs/training.md)
        "mid_block_add_attention": False,
        "norm_num_groups": 8,
        "latent_channels": 16,  # SDXL has 4; see docs/model.md "tiny latent channels"
        "sample_size": 64,
        "scaling_factor": 0.13025,  # SDXL's value until the prior stage calibrates it (1 / latent std)
        "force_upcast": False,
    },
    "unet": {
        "sample_size": 16,
        "in_channels": 16,
        "out_channels": 16,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "norm_num_groups": 16,
        "attention_head_dim": (2, 4),  # diffusers' name for the number of heads, as in SDXL's config
        "transformer_layers_per_block": 1,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "use_linear_projection": True,
    },
    "text_encoder": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    },
    "text_encoder_2": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "projection_dim": 32,
    },
    "max_length": 16,
}

#: SDXL's scheduler config (scheduler/scheduler_config.json of stable-diffusion-xl-base-1.0).
SDXL_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class PriorConfig:
    """The pre-trained latent-diffusion prior (params ``prior``).

    Attributes:
        preset: ``tiny`` (built locally, random, SDXL-shaped) or ``sdxl`` (loaded from ``sdxl_path``).
        sdxl_path: A local diffusers SDXL directory, or a hub id where the network allows.
    """

    preset: str = "tiny"
    sdxl_path: str = ""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"prior.preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.preset == "sdxl" and not self.sdxl_path:
            raise ConfigError(
                "prior.sdxl_path must name a diffusers SDXL directory when prior.preset is sdxl"
            )


@dataclass(frozen=True)
class DAFFConfig:
    """Degradation-Aware Feature Fusion sizes (params ``daff``, paper eqs. 1-5).

    Attributes:
        width: Token width D of both streams.
        num_double_blocks: N double-stream (FLUX) blocks (variants ``both`` and ``double``).
        num_single_blocks: M single-stream (FLUX) blocks (variants ``both`` and ``single``).
        num_heads: Attention heads; ``width / num_heads`` must be a multiple of 4 (2-D rotary positions).
        patch_size: Side of the square latent patches that become one token.
        normalize_lq: ``tiny`` only: GroupNorm f^LQ before its embedding (paper: off).
        lq_residual: ``tiny`` only: per-position LQ path into the output projection (paper: off).
        fusion: ``False`` is the ablation without DAFF (paper Table 5, "no fusion"): DAFF adds nothing,
            the denoiser is the bare UNet, stage 1a trains nothing and stage 1b fine-tunes the UNet alone.
        variant: The fusion blocks (paper Table 4): ``both`` (N double- then M single-stream blocks, the
            paper's DAFF), ``double`` (the N double-stream blocks only), ``single`` (the M single-stream
            blocks only) or ``rsa`` (N + M residual self-attention blocks over [LQ ‖ HQ] without timestep
            modulation, the paper's RSA row).
        lq_scales: Encoder resolutions in f^LQ, coarsest first (paper Fig. 2, "multi-scale features
            f^LQ"): 1 is the LQ encoder's mid-block map alone; N adds the N-1 next finer resolutions, each
            embedded by its own zero-initialised projection and summed into the LQ tokens
            (:class:`~unildiff.models.lq_encoder.LQEncoder`, docs/model.md). At most the VAE's level count.
    """

    width: int = 64
    num_double_blocks: int = 1
    num_single_blocks: int = 1
    num_heads: int = 4
    patch_size: int = 1
    normalize_lq: bool = False
    lq_residual: bool = False
    fusion: bool = True
    variant: str = "both"
    lq_scales: int = 1

    def __post_init__(self) -> None:
        if self.variant not in DAFF_VARIANTS:
            raise ConfigError(f"daff.variant must be one of {', '.join(DAFF_VARIANTS)}, got {self.variant!r}")
        for name in ("width", "num_heads", "patch_size", "lq_scales"):
            if getattr(self, name) < 1:
                raise ConfigError(f"daff.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_double_blocks", "num_single_blocks"):
            if getattr(self, name) < 0:
                raise ConfigError(f"daff.{name} must be >= 0, got {getattr(self, name)}")
        # The blocks a variant builds must exist; daff.variant, not a zero count, selects them.
        needed = {
            "both": ("num_double_blocks", "num_single_blocks"),
            "double": ("num_double_blocks",),
            "single": ("num_single_blocks",),
            "rsa": (),
        }[self.variant]
        for name in needed:
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"daff.{name} must be >= 1 with daff.variant={self.variant} "
                    f"(daff.variant selects the blocks), got {getattr(self, name)}"
                )
        if self.num_double_blocks + self.num_single_blocks < 1:
            raise ConfigError("daff.num_double_blocks + daff.num_single_blocks must be >= 1")
        if self.width % self.num_heads or (self.width // self.num_heads) % 4:
            raise ConfigError(
                f"daff.width / daff.num_heads must be a multiple of 4, got {self.width}/{self.num_heads}"
            )


@dataclass(frozen=True)
class DAEMConfig:
    """Detail-Aware Expert Module settings (params ``daem``, paper eqs. 7-8, supplement section 1).

    Attributes:
        num_experts: E NAFBlock experts per DAEM block.
        top_k: Experts kept per router token (paper: 1); must be <= num_experts.
        window: Router window side in output-image pixels: the router decides per window (the paper's
            "local degradation context"); a block at resolution H/2^j routes windows of window / 2^j of its
            feature pixels, and each feature pixel alone where window < 2^j (``1``: per token in every
            block). 0 routes the whole map (one choice per image).
        up_blocks: Indices of the VAE decoder up blocks that are followed by a DAEM block.
        num_heads: Heads of the shared transposed-attention branch S.
    """

    num_experts: int = 4
    top_k: int = 1
    window: int = 0
    up_blocks: tuple[int, ...] = (1, 2)
    num_heads: int = 1

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ConfigError(f"daem.num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(
                f"daem.top_k must be in [1, daem.num_experts={self.num_experts}], got {self.top_k}"
            )
        if self.window < 0:
            raise ConfigError(f"daem.window must be >= 0, got {self.window}")
        if self.num_heads < 1:
            raise ConfigError(f"daem.num_heads must be >= 1, got {self.num_heads}")
        if len(set(self.up_blocks)) != len(self.up_blocks):
            raise ConfigError(f"daem.up_blocks must not repeat an index, got {list(self.up_blocks)}")
