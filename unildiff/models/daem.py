"""DAEM: the Detail-Aware Expert Module (paper eqs. 7-8, Fig. 4) placed after VAE-decoder up blocks.

One block::

    decoder feature x (B, C, h, w) ─┐
    LQ skip feature   (B, C_s, h, w) ┴─ concat → 1×1 conv → fused (B, C, h, w)
    router tokens: fused averaged over windows (window 0: the whole map) → logits Wx (B, E, h', w')
    gates g = top-k(softmax(Wx + ξ)) (eq. 7), not renormalised; ξ ~ N(0, (1/E)²) in training only, drawn
        by the caller (the stage-2 objective's generator, through :class:`DAEMDecoder`), never here
    y = Σ_i g_i · E_i(fused) ⊗ S(fused) (eq. 8); E_i NAFBlocks, S Restormer transposed attention
    out = x + α ⊙ y, α (1, C, 1, 1) zero-initialised → at initialisation the block is the identity

In training and in exported graphs all experts are evaluated densely and weighted by the (mostly
zero) gates, so the graph has no data-dependent indexing and exports to ONNX. Eager evaluation with
per-image routing runs only the selected experts (:meth:`DAEMBlock._mixture`, same sum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unildiff.errors import ConfigError
from unildiff.models.load_balancing import load_balancing_loss  # noqa: F401  (re-exported, see interfaces)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map (NAFNet/Restormer style)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        variance = (x - mean).pow(2).mean(dim=1, keepdim=True)
        return (x - mean) / torch.sqrt(variance + self.eps) * self.weight + self.bias


class NAFBlock(nn.Module):
    """NAFNet's block (Chen et al. 2022) whose depthwise conv sets the receptive field.

    Args:
        channels: C.
        kernel_size: Depthwise kernel side (odd).
        dilation: Depthwise dilation.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        hidden = 2 * channels
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.conv2 = nn.Conv2d(
            hidden,
            hidden,
            kernel_size,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=hidden,
        )
        self.channel_attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1))
        self.conv3 = nn.Conv2d(channels, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, hidden, 1)
        self.conv5 = nn.Conv2d(channels, channels, 1)
        # NAFNet initialises both residual scales to zero.
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @staticmethod
    def _simple_gate(x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=1)
        return first * second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C, H, W)."""
        y = self._simple_gate(self.conv2(self.conv1(self.norm1(x))))
        y = self.conv3(y * self.channel_attention(y))
        x = x + self.beta * y
        y = self.conv5(self._simple_gate(self.conv4(self.norm2(x))))
        return x + self.gamma * y


class TransposedAttention(nn.Module):
    """Restormer's multi-Dconv-head transposed attention (Zamir et al. 2022): attention across channels.

    The attention map is (C/heads × C/heads) per head, so the cost is linear in H·W.
    """

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"daem.num_heads={num_heads} must divide the decoder width {channels}")
        self.num_heads = num_heads
        self.norm = LayerNorm2d(channels)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.qkv_depthwise = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels)
        self.project_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C, H, W)."""
        batch, channels, height, width = x.shape
        query, key, value = self.qkv_depthwise(self.qkv(self.norm(x))).chunk(3, dim=1)
        shape = (batch, self.num_heads, channels // self.num_heads, height * width)
        query = F.normalize(query.reshape(shape), dim=-1)
        key = F.normalize(key.reshape(shape), dim=-1)
        attention = (query @ key.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        out = (attention @ value.reshape(shape)).reshape(batch, channels, height, width)
        return self.project_out(out)


def expert_receptive_fields(num_experts: int) -> list[tuple[int, int]]:
    """(kernel, dilation) of each expert: kernels 3, 5, 7, then the same with dilation 2, 3, ..."""
    return [(3 + 2 * (index % 3), 1 + index // 3) for index in range(num_experts)]


class DAEMBlock(nn.Module):
    """One DAEM block (eqs. 7-8) fusing a decoder feature with the LQ skip feature of the same resolution.

    Args:
        channels: C, decoder feature channels.
        skip_channels: C_s, skip feature channels.
        num_experts: E.
        top_k: Experts kept per router token.
        window: Router window in pixels of this block's feature map; 0 routes the whole map.
        num_heads: Heads of the shared transposed attention S.
    """

    def __init__(
        self, channels: int, skip_channels: int, num_experts: int, top_k: int, window: int, num_heads: int = 1
    ):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.window = window
        self.fuse = nn.Conv2d(channels + skip_channels, channels, 1)
        self.router = nn.Conv2d(channels, num_experts, 1)  # W of eq. 7, applied to window means
        self.experts = nn.ModuleList(
            [
                NAFBlock(channels, kernel, dilation)
                for kernel, dilation in expert_receptive_fields(num_experts)
            ]
        )
        self.shared = TransposedAttention(channels, num_heads)
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def _router_tokens(self, fused: torch.Tensor) -> torch.Tensor:
        if self.window == 0:
            return fused.mean(dim=(2, 3), keepdim=True)
        return F.avg_pool2d(fused, self.window, stride=self.window, ceil_mode=True)

    def _mixture(self, fused: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Σ_i g_i · E_i(fused) (eq. 8), (B, C, h, w); ``gates`` (B, E, 1, 1) or (B, E, h, w).

        Dense (every expert on every image) in training, with spatial routing, and while exporting, so
        that graphs have no data-dependent indexing. In eager evaluation with per-image routing (window
        0) each expert runs only on the images whose gate selected it: the other terms are exact zeros,
        so the sum is the same, at top_k / E of the experts' cost.
        """
        exporting = torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
        if self.training or self.window > 0 or exporting or torch.compiler.is_compiling():
            return sum(
                gates[:, index : index + 1] * expert(fused) for index, expert in enumerate(self.experts)
            )
        per_image = gates.flatten(1)  # (B, E): window 0 routes each image as one token
        mixture = torch.zeros_like(fused)
        for index, expert in enumerate(self.experts):
            images = per_image[:, index].nonzero().flatten()
            if len(images) == len(fused):
                mixture = mixture + gates[:, index : index + 1] * expert(fused)
            elif len(images):
                weights = per_image[images, index].view(-1, 1, 1, 1)
                mixture = mixture.index_add(0, images, weights * expert(fused[images]))
        return mixture

    def router_shape(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        """Shape (B, E, h', w') of the router logits for a decoder feature ``x`` (B, C, h, w)."""
        if self.window == 0:
            return (x.shape[0], self.num_experts, 1, 1)
        return (
            x.shape[0],
            self.num_experts,
            -(-x.shape[2] // self.window),
            -(-x.shape[3] // self.window),
        )

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor, routing_noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Refine a decoder feature.

        Args:
            x: Decoder feature, (B, C, h, w).
            skip: LQ skip feature from the frozen VAE encoder, (B, C_s, h, w).
            routing_noise: Standard normal draws shaped :meth:`router_shape` (training only): the router
                adds ξ = routing_noise / E (the paper's noisy gating, eq. 7). ``None``: deterministic
                routing, as in evaluation. The block never draws random numbers itself.

        Returns:
            out (B, C, h, w), clean logits (N, E), noisy logits (N, E) and the selection mask (N, E), with
            N = B × router tokens per image.
        """
        fused = self.fuse(torch.cat([x, skip.to(x.dtype)], dim=1))
        clean_logits = self.router(self._router_tokens(fused))  # (B, E, h', w')
        noisy_logits = clean_logits
        if routing_noise is not None:
            noisy_logits = clean_logits + routing_noise.to(clean_logits.dtype) / self.num_experts
        probabilities = noisy_logits.softmax(dim=1)
        threshold = probabilities.topk(self.top_k, dim=1).values[:, self.top_k - 1 : self.top_k]
        selected = (probabilities >= threshold).to(probabilities.dtype)
        gates = probabilities * selected  # eq. 7: top-k of the softmax, kept unnormalised
        if self.window > 0:
            gates = F.interpolate(gates, scale_factor=self.window, mode="nearest")[
                :, :, : x.shape[2], : x.shape[3]
            ]
        mixture = self._mixture(fused, gates)
        refined = mixture * self.shared(fused)  # eq. 8
        out = x + self.scale * refined

        def tokens(logits: torch.Tensor) -> torch.Tensor:
            return logits.permute(0, 2, 3, 1).reshape(-1, self.num_experts)

        return out, tokens(clean_logits), tokens(noisy_logits), tokens(selected)
