"""Typed training settings (supplement §2.2). Built by the stage scripts from ``params.yaml``.

The dataclass defaults are the paper's (``sdxl``) learning rates and iteration counts; ``params.yaml``
holds the scaled-down ``tiny`` counts. Each ``__post_init__`` checks ranges and raises a
:class:`~unildiff.errors.ConfigError` that names the offending ``section.key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unildiff.errors import ConfigError

MIXED_PRECISION_MODES = ("fp32", "fp16", "bf16")
#: ``train.mixed_precision`` -> accelerate's name. ``fp32`` rather than accelerate's ``no``: YAML 1.1
#: readers take an unquoted ``no`` for a boolean, and DVC writes it unquoted (YAML 1.2).
ACCELERATE_MIXED_PRECISION = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}
RESUME_MODES = ("auto", "strict", "never")
OPTIMIZERS = ("adamw", "adamw_8bit")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
LATENT_SOURCES = ("clean", "denoised")


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
        mixed_precision: ``fp32`` | ``fp16`` | ``bf16`` (CUDA only; CPU always trains in fp32).
        accelerate_config: Path of an ``accelerate config`` YAML for ``accelerate launch``; empty = defaults.
        crop_size: Side of the random crop (and horizontal flip) drawn afresh at every step from the
            cached patches (pixels, a multiple of the VAE factor).
        cache_crop_size: Side of the fixed crop per pair whose latents are cached (``encode_latents``);
            0 caches whole patches (they must then share one size, as the built-in patches do).
        gradient_accumulation_steps: Micro-batches per optimizer step (with ``global_batch_size`` 0).
        global_batch_size: Images per optimizer step over all processes (the paper's batch 64); 0 uses
            ``gradient_accumulation_steps`` as set. Otherwise each stage's accumulation is derived:
            global / (the stage's ``batch_size`` × processes), which must divide exactly
            (:meth:`accumulation_steps`).
        max_grad_norm: Gradient clipping norm; 0 disables clipping.
        checkpoint_every: Save the resumable state every this many optimizer steps.
        resume: ``auto`` resumes a matching state and refuses (with the reason) and restarts on a
            mismatching one; ``strict`` makes a mismatch an error; ``never`` always starts at step 0.
        use_ema: Keep an exponential moving average of the trained weights and deliver it.
        ema_decay: EMA decay.
        prompt_dropout: Probability that a prompt is replaced by ``""`` (classifier-free guidance).
        prompts: ``False`` trains the restoration model without prompts: stages 1a and 1b feed only ``""``
            (as ``prompt_dropout`` 1) and stage 2 restores its inputs with ``""``; the paper's Table 5 rows
            without a task prompt. The ``tiny`` prior's own UNet phase keeps its prompts (it stands for the
            pre-trained text-to-image model, which the ablation does not retrain).
        log_every: dvclive logging period in optimizer steps.
        encode_batch_size: Batch size of the frozen-encoder passes (latent cache).
        optimizer: ``adamw`` (torch) | ``adamw_8bit`` (bitsandbytes' AdamW8bit: 8-bit moments, about a
            quarter of AdamW's state; docs/scaling.md).
        gradient_checkpointing: Recompute activations in backward instead of keeping them, through
            diffusers' own switch (``enable_gradient_checkpointing``) on every trained or back-propagated
            diffusers module: the UNet, the VAE and the DAEM decoder. Same result, less memory, more time.
        dataloader_workers: Processes that read training batches from the latent shards ahead of the
            step (and decode the images for ``encode_latents``); 0 reads in the training process. The
            batches are the same either way.
        latent_shard_size: Pairs per shard file of the latent cache (``encode_latents`` holds one shard
            in memory while it writes).
        checkpoints_total_limit: Resumable states kept per stage (``checkpoints/<stage>/step-N/``); the
            newest is resumed from, older ones are deleted after each save.
    """

    seed: int = 0
    mixed_precision: str = "fp32"
    accelerate_config: str = ""
    crop_size: int = 64
    cache_crop_size: int = 0
    gradient_accumulation_steps: int = 1
    global_batch_size: int = 0
    max_grad_norm: float = 1.0
    checkpoint_every: int = 50
    resume: str = "auto"
    use_ema: bool = False
    ema_decay: float = 0.999
    prompt_dropout: float = 0.2
    prompts: bool = True
    log_every: int = 5
    encode_batch_size: int = 16
    optimizer: str = "adamw"
    gradient_checkpointing: bool = False
    dataloader_workers: int = 0
    latent_shard_size: int = 256
    checkpoints_total_limit: int = 1

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.mixed_precision not in MIXED_PRECISION_MODES:
            raise ConfigError(
                f"train.mixed_precision must be one of {MIXED_PRECISION_MODES}, got {self.mixed_precision!r}"
            )
        if self.resume not in RESUME_MODES:
            raise ConfigError(f"train.resume must be one of {RESUME_MODES}, got {self.resume!r}")
        if self.crop_size <= 0 or self.crop_size % 8:
            raise ConfigError(f"train.crop_size must be a positive multiple of 8, got {self.crop_size!r}")
        if self.cache_crop_size and self.cache_crop_size < self.crop_size:
            raise ConfigError(
                f"train.cache_crop_size must be 0 or >= train.crop_size, got {self.cache_crop_size!r}"
            )
        for name in (
            "gradient_accumulation_steps",
            "checkpoint_every",
            "log_every",
            "encode_batch_size",
            "latent_shard_size",
            "checkpoints_total_limit",
        ):
            _positive("train", name, getattr(self, name))
        _non_negative("train", "max_grad_norm", self.max_grad_norm)
        _non_negative("train", "dataloader_workers", self.dataloader_workers)
        _non_negative("train", "global_batch_size", self.global_batch_size)
        if self.global_batch_size and self.gradient_accumulation_steps != 1:
            raise ConfigError(
                "set train.global_batch_size or train.gradient_accumulation_steps, not both "
                f"(got {self.global_batch_size} and {self.gradient_accumulation_steps})"
            )
        _fraction("train", "ema_decay", self.ema_decay)
        _fraction("train", "prompt_dropout", self.prompt_dropout)

    @property
    def restoration_prompt_dropout(self) -> float:
        """Prompt dropout of stages 1a and 1b: 1 without prompts, else ``prompt_dropout``."""
        return self.prompt_dropout if self.prompts else 1.0

    def accumulation_steps(self, batch_size: int, processes: int) -> int:
        """Micro-batches per optimizer step for a stage of ``batch_size`` images per micro-batch and process.

        Raises:
            ConfigError: ``global_batch_size`` is not a multiple of ``batch_size`` × ``processes``.
        """
        if not self.global_batch_size:
            return self.gradient_accumulation_steps
        per_micro_step = batch_size * processes
        if self.global_batch_size % per_micro_step:
            raise ConfigError(
                f"train.global_batch_size={self.global_batch_size} is not a multiple of batch_size "
                f"{batch_size} x {processes} process(es)"
            )
        return self.global_batch_size // per_micro_step


def prompt_fingerprint(config: TrainConfig) -> dict[str, Any]:
    """The resume-fingerprint entry of ``train.prompts`` for the restoration stages: empty with prompts
    on, so states saved before the switch existed still resume."""
    return {} if config.prompts else {"prompts": False}


@dataclass(frozen=True)
class PriorTrainConfig:
    """Training of the ``tiny`` prior (params section ``prior_train``); unused by the ``sdxl`` preset.

    Attributes:
        vae_steps: Optimizer steps of the VAE (reconstruction + KL).
        vae_lr: AdamW learning rate of the VAE.
        vae_adam_beta2: AdamW's β2 in the VAE phase (``tiny``: 0.99 learned faster than torch's 0.999).
        kl_weight: Weight of the KL term of the VAE loss.
        unet_steps: Optimizer steps of the UNet (ε-prediction, eq. 9 with an L2 norm as in LDM).
        unet_lr: AdamW learning rate of the UNet.
        batch_size: Images per micro-batch and process (UNet phase).
        vae_batch_size: Images per micro-batch of the VAE phase.
        vae_crop_size: Side of the random crops the VAE is trained on (0 = ``train.crop_size``); the VAE
            is convolutional, so smaller crops buy more steps for the same CPU time (``tiny``).
        vae_sample_posterior: Decode a posterior sample in training (LDM) or its mode (``tiny``: learns
            faster; the pipeline only ever decodes modes).
        prediction_type: What the tiny UNet learns to predict, written into the prior's scheduler config
            and followed by every later stage: ``epsilon`` (SDXL's), ``v_prediction`` or ``sample``.
        zero_terminal_snr: Rescale the betas to zero terminal SNR (Lin et al. 2024), so that the last
            timestep is pure noise and a pure-noise start matches training.
        timestep_spacing: diffusers' ``timestep_spacing`` of the saved scheduler (``leading``,
            ``trailing``, ``linspace``); ``trailing`` starts few-step sampling at t = T − 1.
        seed: Seed of the prior's weights, batch order, noise and timesteps (it replaces ``train.seed``
            for this stage, so a seed study of stages 1a-2 can keep one prior, as the paper keeps SDXL).
    """

    vae_steps: int = 2000
    vae_lr: float = 1e-3
    vae_adam_beta2: float = 0.999
    kl_weight: float = 1e-6
    unet_steps: int = 4000
    unet_lr: float = 1e-3
    batch_size: int = 16
    vae_batch_size: int = 16
    vae_crop_size: int = 0
    vae_sample_posterior: bool = True
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False
    timestep_spacing: str = "leading"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"prior_train.prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ConfigError(
                f"prior_train.timestep_spacing must be one of {TIMESTEP_SPACINGS}, "
                f"got {self.timestep_spacing!r}"
            )
        for name in ("vae_steps", "unet_steps", "batch_size", "vae_batch_size", "vae_lr", "unet_lr"):
            _positive("prior_train", name, getattr(self, name))
        _non_negative("prior_train", "vae_crop_size", self.vae_crop_size)
        if not 0.0 < self.vae_adam_beta2 < 1.0:
            raise ConfigError(f"prior_train.vae_adam_beta2 must be in (0, 1), got {self.vae_adam_beta2}")
        _non_negative("prior_train", "kl_weight", self.kl_weight)


@dataclass(frozen=True)
class Stage1aConfig:
    """Stage 1a, DAFF pre-training (params section ``stage1a``); paper: lr 5e-5, 6k iterations.

    Attributes:
        steps: Optimizer steps.
        lr: AdamW learning rate of DAFF.
        batch_size: Images per micro-batch and process.
        weight_decay: AdamW weight decay.

    Where the noisy latents start (the LQ start) is the ``start`` section, shared with stage 1b, stage 2
    and sampling (:class:`~unildiff.start.StartConfig`).
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

    The LQ start is the ``start`` section, as for :class:`Stage1aConfig`.
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
        lr: AdamW learning rate of the DAEM blocks (and of the decoder, times ``decoder_lr_scale``).
        decoder_lr_scale: The pre-trained VAE decoder's learning rate as a fraction of ``lr`` (paper: 1,
            one rate). ``tiny`` tunes its from-scratch decoder gently (0.01): at full rate it fitted
            the eleven training photos and lost about 1 dB on the validation photos.
        lambda1: Weight λ1 of ``1 − SSIM``.
        lambda2: Weight λ2 of the load-balancing loss L_aux (paper: 0.01).
        batch_size: Images per micro-batch and process.
        weight_decay: AdamW weight decay.
        crop_size: Random sub-crop (pixels, multiple of 8) of the cached crops decoded per step; 0 = whole.
        latent_source: What the decoder learns to decode: ``clean`` = ``encode(gt)`` (the paper) or
            ``denoised`` = the stage-1 denoiser's one-step restoration of the LQ image (``tiny`` only,
            as DOD trains its decoder; stage 2 then depends on stage 1b).
    """

    steps: int = 10000
    lr: float = 1e-4
    decoder_lr_scale: float = 1.0
    lambda1: float = 0.2
    lambda2: float = 0.01
    batch_size: int = 64
    weight_decay: float = 0.0
    crop_size: int = 0
    latent_source: str = "clean"

    def __post_init__(self) -> None:
        if self.latent_source not in LATENT_SOURCES:
            raise ConfigError(
                f"stage2.latent_source must be one of {LATENT_SOURCES}, got {self.latent_source!r}"
            )
        for name in ("steps", "lr", "batch_size", "decoder_lr_scale"):
            _positive("stage2", name, getattr(self, name))
        for name in ("lambda1", "lambda2", "weight_decay", "crop_size"):
            _non_negative("stage2", name, getattr(self, name))
        if self.crop_size % 8:
            raise ConfigError(f"stage2.crop_size must be a multiple of 8, got {self.crop_size!r}")
