"""GSPO and GSPO-token: hand values and the identities that tie them to each other and to GRPO."""

import math

import pytest
import torch

import mhpo
from batches import make_batch

F64 = torch.float64


def test_gspo_sequence_ratio_and_clip():
    # Row 0: δ = (ln 2, 0), s = exp(ln 2 / 2) = √2, A = −1: ℓ = max(√2, clip √2) = √2, w = √2.
    # Row 1: same s, A = +1: ℓ = −min(√2, 1 + 4e-4) = −1.0004, clipped: w = 0.
    logp = torch.tensor([[math.log(2.0), 0.0], [math.log(2.0), 0.0]], dtype=F64, requires_grad=True)
    adv = torch.tensor([-1.0, 1.0], dtype=F64)
    out = mhpo.policy_loss("gspo", logp, torch.zeros_like(logp), adv, torch.ones_like(logp), aggregation="token_sum")
    expected = torch.tensor([[math.sqrt(2)] * 2, [-1.0004] * 2], dtype=F64)
    torch.testing.assert_close(out.per_token, expected, rtol=1e-15, atol=0)
    out.loss.backward()
    # token_sum of a broadcast ℓ_i = 2·ℓ_i; ∂/∂δ_t = 2·(√2·1/2) = √2 for row 0, 0 for row 1.
    torch.testing.assert_close(logp.grad, torch.tensor([[math.sqrt(2)] * 2, [0.0, 0.0]], dtype=F64), rtol=1e-14, atol=0)
    assert out.metrics["seq_ratio/max"].item() == pytest.approx(math.sqrt(2), rel=1e-15)
    assert out.metrics["clip/high_frac"].item() == pytest.approx(0.5)  # 2 of 4 tokens


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "token_mean", "mean_length"])
def test_gspo_token_equals_gspo_for_constant_advantages(aggregation):
    b = make_batch(seed=11, spread=2e-3)  # sequence ratios straddle GSPO's narrow clip range
    gspo = mhpo.policy_loss("gspo", *b.inputs(), aggregation=aggregation)
    (grad_gspo,) = torch.autograd.grad(gspo.loss, b.logp)
    token = mhpo.policy_loss("gspo_token", *b.inputs(), aggregation=aggregation)
    (grad_token,) = torch.autograd.grad(token.loss, b.logp)
    torch.testing.assert_close(token.loss, gspo.loss, rtol=1e-14, atol=1e-16)
    if aggregation == "seq_mean_token_mean":  # equal gradients where each token weighs 1/T_i
        torch.testing.assert_close(grad_token, grad_gspo, rtol=1e-13, atol=1e-16)
    assert 0 < gspo.metrics["clip/high_frac"] + gspo.metrics["clip/low_frac"] < 1


def test_gspo_on_one_token_sequences_equals_token_clipping():
    b = make_batch(batch=9, length=1, seed=12, spread=1e-3, empty_row=False)
    for aggregation in mhpo.AGGREGATIONS:
        gspo = mhpo.policy_loss("gspo", *b.inputs(), aggregation=aggregation)
        grpo = mhpo.policy_loss("grpo", *b.inputs(), aggregation=aggregation, eps_low=3e-4, eps_high=4e-4)
        torch.testing.assert_close(gspo.per_token, grpo.per_token, rtol=1e-15, atol=0)
        g1, = torch.autograd.grad(gspo.loss, b.logp)
        g2, = torch.autograd.grad(grpo.loss, b.logp)
        torch.testing.assert_close(g1, g2, rtol=1e-15, atol=0)


def test_gspo_token_accepts_per_token_advantages():
    b = make_batch(seed=13)
    per_token = b.advantages.unsqueeze(-1) + 0.1 * torch.arange(7, dtype=F64)
    out = mhpo.policy_loss("gspo_token", b.logp, b.old_logp, per_token, b.mask)
    assert torch.isfinite(out.loss)
