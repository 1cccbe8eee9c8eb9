"""The DAEM router's auxiliary load-balancing loss (supplement section 1, eqs. 1-7; Riquelme et al. 2021).

Every function takes the router logits of a batch of tokens, (N, E): N router tokens (windows or whole
images) and E experts. ``std`` is the population standard deviation (``unbiased=False``) throughout.
"""

from __future__ import annotations

import math

import torch


def squared_coefficient_of_variation(values: torch.Tensor) -> torch.Tensor:
    """(std / mean)² over the last axis, with the population std (supplement eqs. 2 and 6)."""
    mean = values.mean(dim=-1)
    variance = values.var(dim=-1, unbiased=False)
    return variance / mean.pow(2).clamp_min(torch.finfo(values.dtype).tiny)


def importance(clean_logits: torch.Tensor) -> torch.Tensor:
    """Imp_i(X) = Σ_x softmax(Wx)_i (supplement eq. 1).

    Args:
        clean_logits: Router logits Wx without noise, (N, E).

    Returns:
        importance per expert, (E,).
    """
    return clean_logits.softmax(dim=-1).sum(dim=0)


def selection_probability(
    clean_logits: torch.Tensor, noisy_logits: torch.Tensor, noise_std: float, k: int
) -> torch.Tensor:
    """p_i(x) = P((Wx)_i + ε_new >= threshold_k(x)), ε_new ~ N(0, noise_std²) (supplement eqs. 3-4).

    threshold_k(x) is the k-th largest noisy logit (Wx + ε) of token x, ε the noise drawn in the forward pass.

    Args:
        clean_logits: Wx, (N, E).
        noisy_logits: Wx + ε, (N, E).
        noise_std: σ of the routing noise (1/E in the paper).
        k: Experts selected per token.

    Returns:
        p, (N, E), differentiable with respect to both logits.
    """
    threshold = noisy_logits.topk(k, dim=-1).values[:, k - 1 : k]  # (N, 1): eq. 3
    standardised = (threshold - clean_logits) / noise_std
    # P(ε_new >= a) = 1 - Φ(a / σ) = ½·erfc(a / (σ·√2))
    return 0.5 * torch.erfc(standardised / math.sqrt(2.0))


def load(clean_logits: torch.Tensor, noisy_logits: torch.Tensor, noise_std: float, k: int) -> torch.Tensor:
    """load_i(X) = Σ_x p_i(x) (supplement eq. 5), (E,)."""
    return selection_probability(clean_logits, noisy_logits, noise_std, k).sum(dim=0)


def load_balancing_loss(
    clean_logits: torch.Tensor, noisy_logits: torch.Tensor, noise_std: float, k: int
) -> torch.Tensor:
    """L_aux = ½·CV²(importance) + ½·CV²(load) (supplement eq. 7), a 0-dim tensor.

    Uniform routing gives ≈ 0; routing every token to one expert gives a large value.

    Args:
        clean_logits: Router logits Wx, (N, E).
        noisy_logits: Wx + ε with the noise used for routing, (N, E).
        noise_std: σ of the routing noise (1/E).
        k: Experts selected per token (``daem.top_k``).
    """
    importance_term = squared_coefficient_of_variation(importance(clean_logits))  # eq. 2
    load_term = squared_coefficient_of_variation(load(clean_logits, noisy_logits, noise_std, k))  # eq. 6
    return 0.5 * importance_term + 0.5 * load_term
