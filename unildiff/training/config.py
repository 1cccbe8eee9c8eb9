"""Typed training settings (supplement §2.2). Built by the stage scripts from ``params.yaml``.

The dataclass defaults are the paper's (``sdxl``) learning rates and iteration counts; ``params.yaml``
holds the scaled-down ``tiny`` counts. Each ``__post_init__`` checks ranges and raises a
:class:`~unildiff.errors.ConfigError` that names the offending ``section.key``.
"""

from __future__ import annotations

from dataclasses import dataclass

from unildiff.errors import ConfigError

MIXED_PRECISION_MODES = ("no", "fp16", "bf16")
RESUME_MODES = ("auto", "strict", "never")


def _positive(section: str, name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{section}.{name} must be > 0, got {value!r}")


def _non_negative(section: str, name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{section}.{name} must be >= 0, got {value!r}")


def _fraction(section: str, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{section}.{name} must be in [0, 1], got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Settings every training stage shares (params section ``train``).

    Attributes:
        seed: Seed of weights, batch order, noise and timesteps.
        mixed_precision: ``no`` | ``fp16`` | ``bf16`` (accelerate); ``no`` on CPU.
        accelerate_config: Path of an ``accelerate config`` YAML for ``accelerate launch``; empty = defaults.
        crop_size: Side of the fixed training crops whose latents are cached (pixels, multiple of 8).
        gradient_accumulation_steps: Micro-batches per optimizer step.
        max_grad_norm: Gradient clipping norm; 0 disables clipping.
        checkpoint_every: Save the resumable state every this many optimizer steps.
        resume: ``auto`` resumes a matching state and refuses (with the reason) and restarts on a
            mismatching one; ``strict`` makes a mismatch an error; ``never`` always starts at step 0.
        use_ema: Keep an exponential moving average of the trained weights and deliver it.
        ema_decay: EMA decay.
        prompt_dropout: Probability that a prompt is replaced by ``""`` (classifier-free guidance).
        log_every: dvclive logging period in optimizer steps.
        encode_batch_size: Batch size of the frozen-encoder passes (latent cache).
    """

    seed: int = 0
    mixed_precision: str = "no"
    accelerate_config: str = ""
    crop_size: int = 64
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    checkpoint_every: int = 50
    resume: str = "auto"
    use_ema: bool = False
    ema_decay: float = 0.999
    prompt_dropout: float = 0.2
    log_every: int = 5
    encode_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION_MODES:
            raise ConfigError(
                f"train.mixed_precision must be one of {MIXED_PRECISION_MODES}, got {self.mixed_precision!r}"
            )
        if self.resume not in RESUME_MODES:
            raise ConfigError(f"train.resume must be one of {RESUME_MODES}, got {self.resume!r}")
        if self.crop_size <= 0 or self.crop_size % 8:
            raise ConfigError(f"train.crop_size must be a positive multiple of 8, got {self.crop_size!r}")
        for name in ("gradient_accumulation_steps", "checkpoint_every", "log_every", "encode_batch_size"):
            _positive("train", name, getattr(self, name))
        _non_negative("train", "max_grad_norm", self.max_grad_norm)
        _fraction("train", "ema_decay", self.ema_decay)
        _fraction("train", "prompt_dropout", self.prompt_dropout)


@dataclass(frozen=True)
class PriorTrainConfig:
    """Training of the ``tiny`` prior (params section ``prior_train``); unused by the ``sdxl`` preset.

    Attributes:
        vae_steps: Optimizer steps of the VAE (reconstruction + KL).
        vae_lr: AdamW learning rate of the VAE.
        kl_weight: Weight of the KL term of the VAE loss.
        unet_steps: Optimizer steps of the UNet (ε-prediction, eq. 9 with an L2 norm as in LDM).
        unet_lr: AdamW learning rate of the UNet.
        batch_size: Images per micro-batch and process.
    """

    vae_steps: int = 2000
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 4000
    unet_lr: float = 1e-3
    batch_size: int = 16

    def __post_init__(self) -> None:
        for name in ("vae_steps", "unet_steps", "batch_size", "vae_lr", "unet_lr"):
            _positive("prior_train", name, getattr(self, name))
        _non_negative("prior_train", "kl_weight", self.kl_weight)


@dataclass(frozen=True)
class Stage1aConfig:
    """Stage 1a, DAFF pre-training (params section ``stage1a``); paper: lr 5e-5, 6k iterations.

    Attributes:
        steps: Optimizer steps.
        lr: AdamW learning rate of DAFF.
        batch_size: Images per micro-batch and process.
        weight_decay: AdamW weight decay.
    """

    steps: int = 6000
    lr: float = 5e-5
    batch_size: int = 64
    weight_decay: float = 1e-2

    def __post_init__(self) -> None:
        for name in ("steps", "lr", "batch_size"):
            _positive("stage1a", name, getattr(self, name))
        _non_negative("stage1a", "weight_decay", self.weight_decay)


@dataclass(frozen=True)
class Stage1bConfig:
    """Stage 1b, joint fine-tuning (params section ``stage1b``); paper: 40k iterations, cosine decay.

    Attributes:
        steps: Optimizer steps.
        lr_lq_encoder: Initial AdamW learning rate of the LQ encoder.
        lr_denoiser: Initial AdamW learning rate of DAFF and the UNet.
        warmup_steps: Linear warm-up before the cosine decay.
        batch_size: Images per micro-batch and process.
        weight_decay: AdamW weight decay.
    """

    steps: int = 40000
    lr_lq_encoder: float = 5e-6
    lr_denoiser: float = 1e-5
    warmup_steps: int = 0
    batch_size: int = 64
    weight_decay: float = 1e-2

    def __post_init__(self) -> None:
        for name in ("steps", "lr_lq_encoder", "lr_denoiser", "batch_size"):
            _positive("stage1b", name, getattr(self, name))
        _non_negative("stage1b", "warmup_steps", self.warmup_steps)
        _non_negative("stage1b", "weight_decay", self.weight_decay)
        if self.warmup_steps >= self.steps:
            raise ConfigError(f"stage1b.warmup_steps must be < stage1b.steps, got {self.warmup_steps!r}")


@dataclass(frozen=True)
class Stage2Config:
    """Stage 2, decoder + DAEM tuning (params section ``stage2``); loss of eq. 10.

    Attributes:
        steps: Optimizer steps (paper: 10k).
        lr: AdamW learning rate of the decoder and its DAEM blocks.
        lambda1: Weight λ1 of ``1 − SSIM``.
        lambda2: Weight λ2 of the load-balancing loss L_aux (paper: 0.01).
        batch_size: Images per micro-batch and process.
        weight_decay: AdamW weight decay.
        crop_size: Random sub-crop (pixels, multiple of 8) of the cached crops decoded per step; 0 = whole.
    """

    steps: int = 10000
    lr: float = 1e-4
    lambda1: float = 0.2
    lambda2: float = 0.01
    batch_size: int = 64
    weight_decay: float = 0.0
    crop_size: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "lr", "batch_size"):
            _positive("stage2", name, getattr(self, name))
        for name in ("lambda1", "lambda2", "weight_decay", "crop_size"):
            _non_negative("stage2", name, getattr(self, name))
        if self.crop_size % 8:
            raise ConfigError(f"stage2.crop_size must be a multiple of 8, got {self.crop_size!r}")
