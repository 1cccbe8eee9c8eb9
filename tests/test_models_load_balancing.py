"""Load-balancing loss (supplement eqs. 1-7) against a direct, loop-by-loop transcription."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from unildiff.models.load_balancing import importance, load, load_balancing_loss


def _transcription(clean, noisy, sigma, k):
    """Supplement section 1 written literally with Python floats (population std, as stated)."""
    tokens, experts = len(clean), len(clean[0])
    imp = [0.0] * experts
    load_values = [0.0] * experts
    for token in range(tokens):
        exponentials = [math.exp(value) for value in clean[token]]
        for expert in range(experts):
            imp[expert] += exponentials[expert] / sum(exponentials)  # eq. 1
        threshold = sorted(noisy[token], reverse=True)[k - 1]  # eq. 3
        for expert in range(experts):
            margin = threshold - clean[token][expert]
            load_values[expert] += 1.0 - 0.5 * (1.0 + math.erf(margin / (sigma * math.sqrt(2.0))))  # eqs. 4-5

    def cv2(values):
        return (statistics.pstdev(values) / statistics.fmean(values)) ** 2  # eqs. 2 and 6

    return imp, load_values, 0.5 * cv2(imp) + 0.5 * cv2(load_values)  # eq. 7


@pytest.mark.parametrize("k", [1, 2])
def test_matches_the_supplement_transcription(k):
    clean = [[0.5, -1.0, 2.0, 0.1], [1.5, 0.3, -0.2, 0.0], [0.0, 0.0, 0.4, -2.0]]
    noise = [[0.1, -0.2, 0.05, 0.3], [-0.1, 0.25, 0.0, -0.3], [0.2, 0.1, -0.15, 0.05]]
    noisy = [
        [c + n for c, n in zip(row_c, row_n, strict=True)] for row_c, row_n in zip(clean, noise, strict=True)
    ]
    sigma = 1.0 / 4
    imp, load_values, aux = _transcription(clean, noisy, sigma, k)
    clean_t, noisy_t = torch.tensor(clean, dtype=torch.float64), torch.tensor(noisy, dtype=torch.float64)
    torch.testing.assert_close(importance(clean_t), torch.tensor(imp, dtype=torch.float64))
    torch.testing.assert_close(
        load(clean_t, noisy_t, sigma, k), torch.tensor(load_values, dtype=torch.float64)
    )
    assert load_balancing_loss(clean_t, noisy_t, sigma, k).item() == pytest.approx(aux, rel=1e-9)


def test_uniform_is_small_collapsed_is_large_and_gradient_reaches_router():
    generator = torch.Generator().manual_seed(0)
    experts, tokens = 4, 64
    # Balanced: each expert wins a quarter of the tokens with the same margin.
    balanced = torch.eye(experts).repeat(tokens // experts, 1) * 3.0
    uniform_loss = load_balancing_loss(balanced, balanced, 1 / experts, 1)
    assert uniform_loss.item() < 1e-6
    router = torch.nn.Linear(8, experts)
    with torch.no_grad():
        router.bias.copy_(torch.tensor([6.0, 0.0, 0.0, 0.0]))
    features = torch.randn(tokens, 8, generator=generator) * 0.1
    clean = router(features)
    noisy = clean + torch.randn(clean.shape, generator=generator) / experts
    collapsed_loss = load_balancing_loss(clean, noisy, 1 / experts, 1)
    assert collapsed_loss.item() > 1.0
    collapsed_loss.backward()
    assert router.weight.grad.abs().sum() > 0 and router.bias.grad.abs().sum() > 0
    assert router.bias.grad[0] > 0  # descending the loss lowers the favoured expert's bias
