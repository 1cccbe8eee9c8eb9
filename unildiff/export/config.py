"""Typed, frozen configs of the deployment area (export, ONNX Runtime, TensorRT).

Stage scripts build them from ``params.yaml`` sections ``export`` and ``tensorrt``; the
library only receives the dataclasses. Each ``__post_init__`` checks ranges and raises
:class:`~unildiff.errors.ConfigError` naming the param.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from unildiff.errors import ConfigError

SIZE_MULTIPLE = 8
"""Image sides the export and bench checks use are multiples of this: the ``tiny`` graphs' pixel multiple
(4× VAE down-sampling × 2 for the UNet's one down-sampler), and SDXL's VAE factor."""


class Precision(str, enum.Enum):
    """Arithmetic a TensorRT engine may use. ``fp32`` disables TF32, ``tf32`` allows it; ``fp16`` and
    ``bf16`` engines are built from graphs whose weights are in that type (TensorRT 11 builds strongly
    typed networks only), ``fp16`` also from an fp32 graph on TensorRT 10 (the ``FP16`` builder flag)."""

    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"
    BF16 = "bf16"


class OrtOptimization(str, enum.Enum):
    """ONNX Runtime graph optimisation level (``SessionOptions.graph_optimization_level``)."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class OrtExecutionOrder(str, enum.Enum):
    """Order ONNX Runtime runs the nodes in (``SessionOptions.execution_order``).

    ``priority_based`` runs a node as late as its consumers allow; for an fp16 graph on the CPU provider
    this keeps each fp32 cast of an fp16 weight (inserted for nodes without fp16 kernels) alive only
    next to the node that uses it, where ``default`` runs such casts well ahead of their consumers.
    """

    DEFAULT = "default"
    PRIORITY_BASED = "priority_based"


def _precision(value: str, name: str) -> Precision:
    try:
        return Precision(value)
    except ValueError:
        raise ConfigError(
            f"{name} must be one of {[item.value for item in Precision]}, got {value!r}"
        ) from None


@dataclass(frozen=True)
class ExportConfig:
    """``params.yaml: export`` — ONNX export and its parity report.

    Attributes:
        opset: ONNX opset (≥ 17 keeps LayerNorm a native op).
        prefer_dynamo: try ``torch.onnx.export(dynamo=True)`` first, fall back to the TorchScript exporter.
        parity_images: number of prepared test images used for the parity report.
        parity_steps: sampling steps of the end-to-end ORT-vs-torch parity restoration.
        dynamic_check_size: a second square size (pixels) run through every graph to prove dynamic axes.
        graph_atol: max abs difference (outputs in their own units) a graph may show against torch.
        min_pipeline_psnr: lowest PSNR (dB, [0,1] images) between ORT and torch restorations.
    """

    opset: int = 18
    prefer_dynamo: bool = True
    parity_images: int = 2
    parity_steps: int = 4
    dynamic_check_size: int = 32
    graph_atol: float = 1e-3
    min_pipeline_psnr: float = 40.0

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise ConfigError(f"export.opset must be >= 17 (native LayerNorm), got {self.opset}")
        if self.parity_images < 1:
            raise ConfigError(f"export.parity_images must be >= 1, got {self.parity_images}")
        if self.parity_steps < 1:
            raise ConfigError(f"export.parity_steps must be >= 1, got {self.parity_steps}")
        if self.dynamic_check_size < SIZE_MULTIPLE * 2 or self.dynamic_check_size % SIZE_MULTIPLE:
            raise ConfigError(
                f"export.dynamic_check_size must be a multiple of {SIZE_MULTIPLE} and >= 16, "
                f"got {self.dynamic_check_size}"
            )


@dataclass(frozen=True)
class OnnxRuntimeConfig:
    """Session options of the ONNX Runtime backend.

    Attributes:
        intra_op_threads: threads inside one operator; 0 lets ONNX Runtime choose.
        optimization: graph optimisation level (``all`` fuses the most).
        prefer_cuda: use ``CUDAExecutionProvider`` when onnxruntime-gpu provides it.
        allow_spinning: let idle intra-op threads spin (``session.intra_op.allow_spinning``); off by
            default because spinning threads starve the torch work between graph calls.
        execution_order: node order (``SessionOptions.execution_order``).
        cpu_mem_arena: ONNX Runtime's CPU memory arena (``SessionOptions.enable_cpu_mem_arena``); off,
            tensors are freed to the system as soon as they are dead.
        mem_pattern: pre-planned activation buffers (``SessionOptions.enable_mem_pattern``).
    """

    intra_op_threads: int = 0
    optimization: OrtOptimization = OrtOptimization.ALL
    prefer_cuda: bool = True
    allow_spinning: bool = False
    execution_order: OrtExecutionOrder = OrtExecutionOrder.DEFAULT
    cpu_mem_arena: bool = True
    mem_pattern: bool = True

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0:
            raise ConfigError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        try:
            object.__setattr__(self, "optimization", OrtOptimization(self.optimization))
        except ValueError:
            raise ConfigError(
                f"optimization must be one of {[item.value for item in OrtOptimization]}, "
                f"got {self.optimization!r}"
            ) from None
        try:
            object.__setattr__(self, "execution_order", OrtExecutionOrder(self.execution_order))
        except ValueError:
            raise ConfigError(
                f"execution_order must be one of {[item.value for item in OrtExecutionOrder]}, "
                f"got {self.execution_order!r}"
            ) from None


@dataclass(frozen=True)
class TensorRTProfileConfig:
    """``params.yaml: tensorrt.profile`` — the optimisation profile shared by the three engines.

    Image sizes are square sides in pixels (multiples of 8). ``*_images`` count images per call;
    the denoiser's batch is twice that (conditional + unconditional for CFG), with a minimum of
    ``min_images`` so ``cfg = 1`` still fits.
    """

    min_image_size: int = 256
    opt_image_size: int = 512
    max_image_size: int = 1024
    min_images: int = 1
    opt_images: int = 1
    max_images: int = 1

    def __post_init__(self) -> None:
        sizes = (self.min_image_size, self.opt_image_size, self.max_image_size)
        for name, size in zip(("min_image_size", "opt_image_size", "max_image_size"), sizes, strict=True):
            if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
                raise ConfigError(f"tensorrt.profile.{name} must be a positive multiple of 8, got {size}")
        if not sizes[0] <= sizes[1] <= sizes[2]:
            raise ConfigError(
                "tensorrt.profile needs min_image_size <= opt_image_size <= max_image_size, "
                f"got {sizes[0]} / {sizes[1]} / {sizes[2]}"
            )
        images = (self.min_images, self.opt_images, self.max_images)
        if images[0] < 1 or not images[0] <= images[1] <= images[2]:
            raise ConfigError(
                f"tensorrt.profile needs 1 <= min_images <= opt_images <= max_images, got {images}"
            )


@dataclass(frozen=True)
class TensorRTConfig:
    """``params.yaml: tensorrt`` — engine builds.

    Attributes:
        profile: the optimisation profile (image sizes and images per call).
        lq_encoder_precision: ``fp32`` | ``tf32`` | ``fp16``.
        denoiser_precision: fp16 by default (the UNet is fp16-safe, as in NVIDIA's diffusion demo).
        decoder_precision: tf32 by default (the SDXL VAE decoder overflows in fp16).
        workspace_gib: builder workspace memory pool limit.
        builder_optimization_level: TensorRT builder optimisation level 0–5.
    """

    profile: TensorRTProfileConfig = field(default_factory=TensorRTProfileConfig)
    lq_encoder_precision: Precision = Precision.TF32
    denoiser_precision: Precision = Precision.FP16
    decoder_precision: Precision = Precision.TF32
    workspace_gib: float = 8.0
    builder_optimization_level: int = 3

    def __post_init__(self) -> None:
        for name in ("lq_encoder_precision", "denoiser_precision", "decoder_precision"):
            object.__setattr__(self, name, _precision(getattr(self, name), f"tensorrt.{name}"))
        if self.workspace_gib <= 0:
            raise ConfigError(f"tensorrt.workspace_gib must be > 0, got {self.workspace_gib}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ConfigError(
                f"tensorrt.builder_optimization_level must be in 0..5, got {self.builder_optimization_level}"
            )
