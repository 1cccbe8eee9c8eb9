"""What the two exported backends share: the three protocol methods over per-graph runners.

ONNX Runtime sessions and TensorRT engines are both called with torch tensors in the graph's input order
and return the graph's outputs in order as float32 torch tensors; :class:`ExportedGraphs` maps the
``RestorationGraphs`` methods onto such runners, so each backend only opens its runners.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from unildiff.backends import LQEncoding
from unildiff.export.specs import GraphName

if TYPE_CHECKING:
    from collections.abc import Callable


class ExportedGraphs:
    """``RestorationGraphs`` over three exported graphs (see :class:`unildiff.backends.RestorationGraphs`).

    Subclasses set ``pixel_multiple`` and fill ``runners`` with a callable per graph
    (:attr:`~unildiff.export.specs.GraphName.LQ_ENCODER`, ``DENOISER``, ``DECODER``) that takes torch
    tensors in the graph's input order and returns its outputs as a list of float32 torch tensors.

    Attributes:
        pixel_multiple: image sides the graphs accept are multiples of this.
        runners: the per-graph callables.
        timestep_device: where a scalar or Python timestep is placed (``None``: where it already is).
    """

    pixel_multiple: int
    runners: dict[GraphName, Callable[..., list[torch.Tensor]]]
    timestep_device: str | None = None

    def encode_lq(self, lq: torch.Tensor) -> LQEncoding:
        """LQ image [-1, 1], (B, 3, H, W) → LQEncoding(lq_features, lq_latent (scaled), skips)."""
        lq_features, lq_latent, *skips = self.runners[GraphName.LQ_ENCODER](lq)
        return LQEncoding(lq_features=lq_features, lq_latent=lq_latent, skips=tuple(skips))

    def denoise(
        self, sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids
    ) -> torch.Tensor:
        """One UNet + DAFF evaluation on scheduler-scaled latents (B, 4, h, w) → noise prediction.

        ``timestep`` is a scalar or (B,); a scalar is broadcast to the batch as float32.
        """
        timestep = torch.as_tensor(timestep, dtype=torch.float32, device=self.timestep_device).reshape(-1)
        if timestep.numel() == 1:
            timestep = timestep.expand(sample.shape[0])
        (noise_pred,) = self.runners[GraphName.DENOISER](
            sample, timestep, lq_features, encoder_hidden_states, text_embeds, time_ids
        )
        return noise_pred

    def decode(self, latents: torch.Tensor, skips: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Scaled latents (B, 4, h, w) + LQ skips → image [-1, 1], (B, 3, 8h, 8w)."""
        (image,) = self.runners[GraphName.DECODER](latents, *skips)
        return image
