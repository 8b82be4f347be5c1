"""GRPO / Dr. GRPO / DAPO / HPO / A-HPO: hand-derived values and identities."""

import math

import pytest
import torch

import mhpo

F64 = torch.float64


def tokens(ratios, advantages, mask=None):
    logp = torch.tensor(ratios, dtype=F64).log().requires_grad_(True)
    old = torch.zeros_like(logp)
    adv = torch.tensor(advantages, dtype=F64)
    mask = torch.ones_like(old) if mask is None else torch.tensor(mask, dtype=F64)
    return logp, old, adv, mask


def test_grpo_values_gradients_and_clip_fractions():
    # Row 0 has A = +1, row 1 has A = −1, ε = 0.2 so clip(r) ∈ [0.8, 1.2].
    logp, old, adv, mask = tokens([[0.5, 0.9, 1.3, 1.1], [0.5, 0.9, 1.3, 1.1]], [1.0, -1.0])
    out = mhpo.policy_loss("grpo", logp, old, adv, mask, aggregation="token_sum")
    # A = +1: ℓ = −min(r, clip r) = −(0.5, 0.9, 1.2, 1.1)
    # A = −1: ℓ = max(r, clip r)   =  (0.8, 0.9, 1.3, 1.1)
    expected = torch.tensor([[-0.5, -0.9, -1.2, -1.1], [0.8, 0.9, 1.3, 1.1]], dtype=F64)
    torch.testing.assert_close(out.per_token, expected, rtol=1e-15, atol=1e-15)
    out.loss.backward()
    # ∂ℓ/∂logp = −A·r on the unclipped branch, 0 on the clipped one:
    # A = +1: (−0.5, −0.9, 0, −1.1);  A = −1: (0, 0.9, 1.3, 1.1)
    grad = torch.tensor([[-0.5, -0.9, 0.0, -1.1], [0.0, 0.9, 1.3, 1.1]], dtype=F64)
    torch.testing.assert_close(logp.grad, grad, rtol=1e-14, atol=1e-15)
    # low: r < 0.8 with A < 0 (one token of 8); high: r > 1.2 with A > 0 (one of 8)
    assert out.metrics["clip/low_frac"].item() == pytest.approx(1 / 8, abs=1e-15)
    assert out.metrics["clip/high_frac"].item() == pytest.approx(1 / 8, abs=1e-15)


def test_dual_clip_caps_negative_advantage_loss():
    logp, old, adv, mask = tokens([[4.0, 2.0, 0.5]], [-1.0])
    out = mhpo.policy_loss("grpo", logp, old, adv, mask, aggregation="token_sum", dual_clip=3.0)
    # max(r, clip r) = (4, 2, 0.8); the cap −c·A = 3 applies to the first token only.
    torch.testing.assert_close(out.per_token, torch.tensor([[3.0, 2.0, 0.8]], dtype=F64), rtol=1e-15, atol=0)
    out.loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2.0, 0.0]], dtype=F64), rtol=1e-14, atol=0)
    assert out.metrics["clip/dual_frac"].item() == pytest.approx(1 / 3)
    plain = mhpo.policy_loss("grpo", logp, old, adv, mask, aggregation="token_sum")
    assert "clip/dual_frac" not in plain.metrics


def test_huge_dual_clip_equals_no_dual_clip(batch):
    with_dual = mhpo.policy_loss("grpo", *batch.inputs(), dual_clip=1e12)
    without = mhpo.policy_loss("grpo", *batch.inputs())
    torch.testing.assert_close(with_dual.loss, without.loss, rtol=0, atol=0)


def test_dapo_clip_higher():
    logp, old, adv, mask = tokens([[1.25, 1.3, 0.7]], [1.0])
    out = mhpo.policy_loss("dapo", logp, old, adv, mask)
    # ε_high = 0.28: r = 1.25 stays, r = 1.3 → 1.28; r = 0.7 < 0.8 with A > 0 keeps r (min).
    torch.testing.assert_close(out.per_token, torch.tensor([[-1.25, -1.28, -0.7]], dtype=F64), rtol=1e-15, atol=0)
    # token_mean: (−1.25 − 1.28 − 0.7) / 3
    assert out.loss.item() == pytest.approx(-3.23 / 3, rel=1e-14)


def test_dr_grpo_defaults_and_constant_length_normaliser():
    spec = mhpo.get_objective("dr_grpo")
    assert (spec.aggregation, spec.advantage_scale) == ("seq_mean_token_sum_norm", "none")
    logp, old, adv, mask = tokens([[0.5, 0.9], [0.8, 1.0]], [1.0, -1.0], mask=[[1, 1], [1, 0]])
    out = mhpo.policy_loss("dr_grpo", logp, old, adv, mask, max_length=4)
    # ℓ = (−0.5, −0.9 | 0.8, ·); (Σ) / B' / L = (−1.4 + 0.8) / 2 / 4 = −0.075
    assert out.loss.item() == pytest.approx(-0.075, rel=1e-14)


def test_hpo_fixed_alpha_and_mean_length():
    spec = mhpo.get_objective("hpo")
    assert (spec.aggregation, spec.hysteresis) == ("mean_length", 0.6)
    logp, old, adv, mask = tokens([[0.5, 1.3], [0.9, 1.0]], [1.0, -1.0], mask=[[1, 1], [1, 0]])
    out = mhpo.policy_loss("hpo", logp, old, adv, mask)
    # ℓ = (−0.5, −1.2 | 0.6·0.9, ·); total −1.16; B'·L̄ = 2·(3/2) = 3
    assert out.loss.item() == pytest.approx(-1.16 / 3, rel=1e-14)
    assert out.metrics["hpo/alpha"].item() == pytest.approx(0.6)
    override = mhpo.policy_loss("hpo", logp, old, adv, mask, hysteresis=0.0)
    assert override.loss.item() == pytest.approx(-1.7 / 3, rel=1e-14)


def test_a_hpo_alpha_from_advantage_signs():
    logp, old, adv, mask = tokens([[0.9], [0.9], [0.9], [0.9]], [1.0, -1.0, -1.0, -1.0])
    out = mhpo.policy_loss("a_hpo", logp, old, adv, mask, aggregation="token_sum")
    # n⁺ = 1, n⁻ = 3: α = 1/3; ℓ = −0.9 + 3·(1/3)·0.9 = 0
    assert out.metrics["hpo/alpha"].item() == pytest.approx(1 / 3, rel=1e-15)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-15)
    floor = mhpo.policy_loss("a_hpo", logp, old, adv, mask, alpha_min=0.5)
    assert floor.metrics["hpo/alpha"].item() == 0.5


def test_hysteresis_one_equals_parent_and_applies_to_any_objective(batch):
    for name in ("grpo", "mhpo", "sapo", "gspo"):
        plain = mhpo.policy_loss(name, *batch.inputs())
        torch.testing.assert_close(mhpo.policy_loss(name, *batch.inputs(), hysteresis=1.0).loss, plain.loss, rtol=0, atol=0)
        half = mhpo.policy_loss(name, *batch.inputs(), hysteresis=0.5)
        negative = batch.advantages.unsqueeze(-1).expand_as(batch.mask) < 0
        expected = torch.where(negative, 0.5 * plain.per_token, plain.per_token)
        torch.testing.assert_close(half.per_token, expected, rtol=1e-15, atol=0)


def test_hpo_is_grpo_with_hysteresis_and_mean_length(batch):
    grpo = mhpo.policy_loss("grpo", *batch.inputs(), hysteresis=0.6, aggregation="mean_length")
    torch.testing.assert_close(mhpo.policy_loss("hpo", *batch.inputs()).loss, grpo.loss, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["grpo", "dapo", "dr_grpo", "cispo", "sapo", "gspo_token", "gspo"])
def test_on_policy_gradient_equals_plain_policy_gradient(name, batch):
    """At r = 1 (old = logp) the clipped, SAPO, CISPO and GSPO gradients are REINFORCE's."""
    old = batch.logp.detach()
    aggregation = "seq_mean_token_mean"
    (grad,) = torch.autograd.grad(
        mhpo.policy_loss(name, batch.logp, old, batch.advantages, batch.mask, aggregation=aggregation).loss,
        batch.logp,
    )
    (reference,) = torch.autograd.grad(
        mhpo.policy_loss("reinforce", batch.logp, old, batch.advantages, batch.mask, aggregation=aggregation).loss,
        batch.logp,
    )
    torch.testing.assert_close(grad, reference, rtol=1e-14, atol=1e-16)
    assert reference.abs().max() > 0.01


def test_clip_at_extreme_ratio_gives_zero_gradient_from_clamp():
    # δ = 30 is clamped to 20: with A < 0 the unclipped branch is active, but the clamp stops
    # the gradient (docs/objectives.md: δ is clamped before exponentiation).
    logp, old, adv, mask = tokens([[math.exp(30.0)]], [-1.0])
    out = mhpo.policy_loss("grpo", logp, old, adv, mask)
    assert out.per_token.item() == pytest.approx(math.exp(20.0), rel=1e-14)
    out.loss.backward()
    assert logp.grad.item() == 0.0
    assert mhpo.gradient_weight("grpo", torch.tensor([30.0], dtype=F64), torch.tensor([-1.0], dtype=F64)).item() == 0
