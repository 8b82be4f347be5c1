"""SAPO: hand-derived values and gradients."""

import math

import pytest
import torch

import mhpo
from batches import make_batch

F64 = torch.float64


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_sapo_values_and_gradient_weight():
    ratios = [[2.0], [0.5]]
    logp = torch.tensor(ratios, dtype=F64).log().requires_grad_(True)
    adv = torch.tensor([1.0, -1.0], dtype=F64)
    out = mhpo.policy_loss("sapo", logp, torch.zeros_like(logp), adv, torch.ones_like(logp), aggregation="token_sum")
    # A = +1, τ = 1, r = 2:    ℓ = −4·σ(1)              = −2.924234...
    # A = −1, τ = 1.05, r = ½: ℓ = (4/1.05)·σ(−0.525)   =  1.415946...
    expected = [[-4 * sigmoid(1.0)], [4 / 1.05 * sigmoid(1.05 * -0.5)]]
    torch.testing.assert_close(out.per_token, torch.tensor(expected, dtype=F64), rtol=1e-14, atol=0)
    out.loss.backward()
    # w = r·sech²(τ(r − 1)/2); ∂ℓ/∂logp = −A·w
    sech2 = lambda x: 1 / math.cosh(x) ** 2  # noqa: E731
    w = [2 * sech2(0.5), 0.5 * sech2(1.05 * -0.5 / 2)]
    torch.testing.assert_close(logp.grad, torch.tensor([[-w[0]], [w[1]]], dtype=F64), rtol=1e-14, atol=0)
    gate = (sech2(0.5) + sech2(1.05 * -0.25)) / 2
    assert out.metrics["sapo/gate_mean"].item() == pytest.approx(gate, rel=1e-14)


def test_sapo_weight_is_one_on_policy():
    w = mhpo.gradient_weight("sapo", torch.zeros(2, dtype=F64), torch.tensor([1.0, -1.0], dtype=F64))
    torch.testing.assert_close(w, torch.ones(2, dtype=F64), rtol=0, atol=0)


def test_sapo_gradcheck():
    b = make_batch(seed=21, batch=3, length=4, group_size=3)
    fn = lambda logp: mhpo.policy_loss("sapo", logp, b.old_logp, b.advantages, b.mask).loss  # noqa: E731
    assert torch.autograd.gradcheck(fn, (b.logp,), eps=1e-6, atol=1e-8, rtol=1e-6)
