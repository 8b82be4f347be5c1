"""CISPO: the clipped weight bounds the update but never removes a token's gradient."""

import math

import pytest
import torch

import mhpo

F64 = torch.float64


def test_cispo_values_and_gradients():
    logp = torch.tensor([[0.5, 8.0, 1.5]], dtype=F64).log().requires_grad_(True)
    adv = torch.tensor([2.0], dtype=F64)
    out = mhpo.policy_loss("cispo", logp, torch.zeros_like(logp), adv, torch.ones_like(logp), aggregation="token_sum")
    # w = clip(r, −, 5) = (0.5, 5, 1.5); ℓ = −w·A·logp
    expected = [[-0.5 * 2 * math.log(0.5), -5 * 2 * math.log(8.0), -1.5 * 2 * math.log(1.5)]]
    torch.testing.assert_close(out.per_token, torch.tensor(expected, dtype=F64), rtol=1e-14, atol=0)
    out.loss.backward()
    # ∂ℓ/∂logp = −A·w: the capped token still has gradient −2·5 (PPO would give 0).
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.0, -10.0, -3.0]], dtype=F64), rtol=1e-14, atol=0)
    assert out.metrics["clip/high_frac"].item() == pytest.approx(1 / 3)
    assert "clip/low_frac" not in out.metrics


def test_cispo_lower_bound_and_trl_cap_convention():
    logp = torch.tensor([[0.5]], dtype=F64).log().requires_grad_(True)
    adv = torch.tensor([1.0], dtype=F64)
    out = mhpo.policy_loss("cispo", logp, torch.zeros_like(logp), adv, torch.ones_like(logp), eps_low=0.2)
    out.loss.backward()
    assert logp.grad.item() == pytest.approx(-0.8, rel=1e-15)  # weight raised to 1 − 0.2
    assert out.metrics["clip/low_frac"].item() == 1.0
    # eps_high is an offset from 1: the default cap is 5.0 (TRL's epsilon_high=5.0).
    w = mhpo.gradient_weight("cispo", torch.tensor([math.log(100.0)], dtype=F64), torch.ones(1, dtype=F64))
    assert w.item() == 5.0
