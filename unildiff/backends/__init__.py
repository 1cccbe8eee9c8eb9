"""The three backends behind one protocol: torch modules, ONNX Runtime sessions and TensorRT engines.

:class:`RestorationGraphs` is all :class:`~unildiff.pipeline.RestorationPipeline` needs;
:func:`open_backend` opens it for any :class:`Backend`. The implementations live in the submodules
``torch`` (:class:`~unildiff.backends.torch.TorchGraphs`), ``onnxruntime`` and ``tensorrt``; the two
exported ones share :class:`~unildiff.backends.exported.ExportedGraphs`. ONNX Runtime and TensorRT are
imported only when their backend is opened.

Note: this package's submodule ``unildiff.backends.torch`` becomes the attribute ``torch`` of this
module once imported, so this file never binds the name ``torch`` to the library itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from unildiff.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from torch import Tensor

    from unildiff.export.config import OnnxRuntimeConfig


class Backend(str, Enum):
    """Who runs the graphs: torch modules, ONNX Runtime sessions or TensorRT engines."""

    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


@dataclass
class LQEncoding:
    """The LQ image encoded once per image.

    Attributes:
        lq_features: f^LQ for DAFF, unbounded, (B, C_lq, H/8, W/8); with ``daff.lq_scales`` > 1 the
            scales stacked on the channel axis (C_lq = ``LQEncoder.out_channels``;
            :mod:`unildiff.models.lq_encoder`).
        lq_latent: scaled VAE latent of the LQ image, (B, 4, H/8, W/8).
        skips: the frozen VAE encoder's multi-scale features consumed by the DAEM decoder.
    """

    lq_features: Tensor
    lq_latent: Tensor
    skips: tuple[Tensor, ...]


class RestorationGraphs(Protocol):
    """The three graphs the pipeline runs; every backend implements them.

    Attributes:
        pixel_multiple: Image sides the graphs accept are multiples of this (the pipeline pads to it).
    """

    pixel_multiple: int

    def encode_lq(self, lq: Tensor) -> LQEncoding:
        """Encode the LQ image [-1, 1], (B, 3, H, W)."""
        ...

    def denoise(
        self,
        sample: Tensor,
        timestep: Tensor,
        lq_features: Tensor,
        encoder_hidden_states: Tensor,
        text_embeds: Tensor,
        time_ids: Tensor,
    ) -> Tensor:
        """Predict the noise of ``sample`` (B, 4, h, w) at ``timestep`` (B,) float32."""
        ...

    def decode(self, latents: Tensor, skips: tuple[Tensor, ...]) -> Tensor:
        """Decode scaled latents (B, 4, h, w) to an image [-1, 1], (B, 3, 8h, 8w)."""
        ...


def open_backend(
    backend: Backend | str,
    *,
    model=None,
    device: str | None = None,
    plain_decoder: bool = False,
    onnx_dir: Path = Path("export/onnx"),
    engine_dir: Path = Path("export/engines"),
    onnxruntime: OnnxRuntimeConfig | None = None,
) -> RestorationGraphs:
    """Open ``backend``'s graphs, ready for ``RestorationPipeline``.

    Args:
        backend: a :class:`Backend` or its value.
        model: the ``UniLDiffModel`` the torch backend runs (the exported backends ignore it).
        device: ``cpu`` or ``cuda``. The torch backend moves ``model`` there (``None`` leaves it where it
            is); ONNX Runtime uses CUDA only when asked (``None`` = ``cpu``) and onnxruntime-gpu is
            present; TensorRT needs ``cuda``.
        plain_decoder: torch only: decode with the plain VAE decoder instead of DAEM (the ablation).
        onnx_dir: the export stage's ``export/onnx`` (onnxruntime).
        engine_dir: ``export/engines`` (tensorrt; the GPU- and version-named folder is chosen inside).
        onnxruntime: ONNX Runtime session options (default: CUDA preferred when ``device`` is ``cuda``).

    Raises:
        ConfigError: the torch backend without ``model``.
        BackendUnavailableError: TensorRT/CUDA absent, or engines built elsewhere.
        MissingArtifactError: graphs or engines not built (names the stage or command).
    """
    backend = Backend(backend)
    if backend is Backend.TORCH:
        from unildiff.backends.torch import TorchGraphs

        if model is None:
            raise ConfigError("open_backend: the torch backend needs model= (a UniLDiffModel)")
        if device is not None:
            model.to(device)
        return TorchGraphs.from_model(model, plain_decoder=plain_decoder)
    device = device or "cpu"
    check_available(backend, device)
    if backend is Backend.ONNXRUNTIME:
        from unildiff.backends.onnxruntime import OnnxRuntimeGraphs
        from unildiff.export.config import OnnxRuntimeConfig

        config = onnxruntime or OnnxRuntimeConfig(prefer_cuda=device == "cuda")
        return OnnxRuntimeGraphs(Path(onnx_dir), config)
    from unildiff.backends.tensorrt import TensorRTGraphs

    return TensorRTGraphs(Path(engine_dir))


def check_available(backend: Backend | str, device: str) -> None:
    """Raise when ``backend`` cannot run on ``device`` here, found without loading a model or a graph.

    It catches what needs no artifacts (TensorRT on a CPU device, TensorRT not installed), so callers
    such as the per-process bench skip such a backend without starting a process for it.

    Raises:
        BackendUnavailableError: names what is missing.
    """
    if Backend(backend) is Backend.TENSORRT:
        if device != "cuda":
            raise BackendUnavailableError(f"the tensorrt backend runs on CUDA only, got --device {device}")
        from unildiff.export.tensorrt_build import import_tensorrt

        import_tensorrt()
