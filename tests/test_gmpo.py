"""GMPO: geometric mean of log-space-clipped token ratios."""

import math

import pytest
import torch

import mhpo

F64 = torch.float64


def test_gmpo_positive_advantage():
    logp = torch.tensor([[0.2, 1.0]], dtype=F64, requires_grad=True)
    out = mhpo.policy_loss("gmpo", logp, torch.zeros_like(logp), torch.tensor([1.0], dtype=F64),
                           torch.ones_like(logp), aggregation="token_sum")  # fmt: skip
    # A > 0: δ̃ = min(δ, clip(δ, −0.4, 0.4)) = (0.2, 0.4); g = exp(0.3); ℓ_i = −g on both tokens.
    g = math.exp(0.3)
    torch.testing.assert_close(out.per_token, torch.tensor([[-g, -g]], dtype=F64), rtol=1e-15, atol=0)
    out.loss.backward()
    # token_sum = 2·ℓ_i; ∂/∂δ_1 = −2·g·(1/2) = −g; δ_2 is clipped: 0.
    torch.testing.assert_close(logp.grad, torch.tensor([[-g, 0.0]], dtype=F64), rtol=1e-14, atol=0)
    assert out.metrics["clip/high_frac"].item() == 0.5
    assert out.metrics["seq_ratio/mean"].item() == pytest.approx(g, rel=1e-15)


def test_gmpo_negative_advantage_keeps_large_ratio_unclipped():
    logp = torch.tensor([[-1.0, 0.1, 0.9]], dtype=F64, requires_grad=True)
    out = mhpo.policy_loss("gmpo", logp, torch.zeros_like(logp), torch.tensor([-1.0], dtype=F64),
                           torch.ones_like(logp), aggregation="token_sum")  # fmt: skip
    # A < 0: δ̃ = max(δ, clip(δ, −0.4, 0.4)) = (−0.4, 0.1, 0.9); g = exp(0.6/3) = exp(0.2)
    g = math.exp(0.2)
    torch.testing.assert_close(out.per_token, torch.full((1, 3), g, dtype=F64), rtol=1e-15, atol=0)
    out.loss.backward()
    # token_sum = 3·g·|A|; ∂/∂δ_t = g for unclipped tokens (2 and 3), 0 for the first.
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, g, g]], dtype=F64), rtol=1e-14, atol=0)
    assert out.metrics["clip/low_frac"].item() == pytest.approx(1 / 3)
