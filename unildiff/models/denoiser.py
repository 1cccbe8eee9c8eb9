"""The UniLDiff denoiser ε̂_θ(f^align, c, t): the UNet with DAFF between conv_in and the first down block.

The UNet is neither subclassed nor modified: a forward hook on ``unet.conv_in`` adds DAFF's residual to the
conv_in output, reading the conditioning that :meth:`UniLDiffDenoiser.forward` stores for the duration of its
call. Outside that call the hook returns conv_in's output unchanged, so ``unet(...)`` alone is the bare UNet
and ``unet.state_dict()``/``unet.save_pretrained`` hold no DAFF weight.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from unildiff.models.daff import DAFF


class UniLDiffDenoiser(nn.Module):
    """Noise prediction of the UNet conditioned on f^LQ through DAFF (paper eq. 6's ε̂_θ).

    Args:
        unet: The prior's (or stage 1b's) ``UNet2DConditionModel`` with ``addition_embed_type="text_time"``.
        daff: The DAFF module sized for this UNet.
    """

    def __init__(self, unet: UNet2DConditionModel, daff: DAFF):
        super().__init__()
        self.unet = unet
        self.daff = daff
        self._conditioning: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        # With ``daff.config.fusion`` off (the ablation without DAFF) the UNet stays bare: no hook, no cost.
        self._hook = (
            unet.conv_in.register_forward_hook(self._add_daff_residual) if daff.config.fusion else None
        )

    def _add_daff_residual(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if self._conditioning is None:  # the UNet is called on its own: leave it bare
            return output
        lq_features, timestep, encoder_hidden_states = self._conditioning
        return output + self.daff(output, lq_features, timestep, encoder_hidden_states)

    def remove_hook(self) -> None:
        """Detach from ``unet.conv_in`` (the denoiser is unusable afterwards)."""
        if self._hook is not None:
            self._hook.remove()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        lq_features: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        text_embeds: torch.Tensor,
        time_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the noise ε̂ in a noisy scaled latent.

        Args:
            sample: Noisy scaled latent x_t (after the scheduler's ``scale_model_input``), (B, 4, h, w).
            timestep: Timesteps, (B,) or a scalar tensor.
            lq_features: f^LQ from :class:`~unildiff.models.lq_encoder.LQEncoder`, (B, C_lq, h, w), its
                scales stacked on the channel axis (``daff.lq_scales``).
            encoder_hidden_states: Prompt embeddings c, (B, L, D) (see ``encode_prompt``).
            text_embeds: Pooled prompt embeddings, (B, Dp).
            time_ids: SDXL micro-conditioning, (B, 6) (see ``make_time_ids``).

        Returns:
            noise_pred, (B, 4, h, w).
        """
        self._conditioning = (lq_features, timestep, encoder_hidden_states)
        try:
            return self.unet(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
                return_dict=False,
            )[0]
        finally:
            self._conditioning = None
