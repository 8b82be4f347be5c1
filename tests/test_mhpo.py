"""MHPO: reference values, the bounded-gradient property, ablations and normalisation."""

import math

import pytest
import torch

import mhpo
from batches import make_batch

F64 = torch.float64


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def reference(r: float, c=1.5, k_pos=1.5, lam_pos=1.0, k_neg=2.0, lam_neg=0.8, lfm=True, dhp=True):
    """docs/objectives.md#mhpo-mhpo written out with the math module, independently of the library."""
    delta = math.log(r)
    psi = c * math.tanh(delta / c) if lfm else delta
    zeta = (softplus(psi) / lam_pos) ** k_pos + (softplus(-psi) / lam_neg) ** k_neg if dhp else 0.0
    slope = 1 - math.tanh(delta / c) ** 2 if lfm else 1.0
    return {"loss_per_unit_A": -math.exp(psi - zeta), "survival": math.exp(-zeta), "weight": math.exp(psi - zeta) * slope}


def test_on_policy_arithmetic():
    # r = 1: ψ = 0, softplus(0) = ln 2 = 0.693147
    # ζ = (0.693147/1)^1.5 + (0.866434)^2 = 0.693147·0.832555 + 0.750708 = 0.577083 + 0.750708
    #   = 1.327791;  exp(−ζ) = 0.265062;  w(1) = exp(0 − ζ)·sech²(0) = 0.265062
    zeta = math.log(2) ** 1.5 + (math.log(2) / 0.8) ** 2
    assert zeta == pytest.approx(1.327791, abs=1e-6)
    w = mhpo.gradient_weight("mhpo", torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64))
    assert w.item() == pytest.approx(math.exp(-zeta), rel=1e-15)


@pytest.mark.parametrize(
    "r, survival, weight",
    [(0.5, 0.128, 0.054), (1.0, 0.265, 0.265), (2.0, 0.251, 0.391), (10.0, 0.123, 0.082)],
)
def test_methods_reference_values(r, survival, weight):
    """The 3-decimal values docs/objectives.md lists, and the exact values of the formula."""
    logp = torch.tensor([[math.log(r)]], dtype=F64, requires_grad=True)
    out = mhpo.policy_loss("mhpo", logp, torch.zeros_like(logp), torch.ones(1, dtype=F64), torch.ones_like(logp))
    w = mhpo.gradient_weight("mhpo", logp.detach(), torch.ones(1, 1, dtype=F64)).item()
    assert out.metrics["mhpo/survival"].item() == pytest.approx(survival, abs=5e-4)
    assert w == pytest.approx(weight, abs=5e-4)
    exact = reference(r)
    assert out.metrics["mhpo/survival"].item() == pytest.approx(exact["survival"], rel=1e-13)
    assert out.per_token.item() == pytest.approx(exact["loss_per_unit_A"], rel=1e-13)
    assert w == pytest.approx(exact["weight"], rel=1e-13)
    out.loss.backward()
    assert logp.grad.item() == pytest.approx(-exact["weight"], rel=1e-13)


@pytest.mark.parametrize("c", [0.5, 1.5, 3.0])
@pytest.mark.parametrize("use_dhp", [True, False])
def test_gradient_weight_bounded_by_exp_c(c, use_dhp):
    r = torch.logspace(-6, 6, 20001, dtype=F64)
    for sign in (1.0, -1.0):
        w = mhpo.gradient_weight("mhpo", r.log(), torch.full_like(r, sign), c=c, use_dhp=use_dhp)
        # sech²(δ/c) underflows to 0 in float64 far out (|δ|/c > ~19), in autograd as well.
        assert torch.isfinite(w).all() and (w >= 0).all()
        assert w.max().item() < math.exp(c)
    # The bound is a property of the LFM: without it the weight r·exp(−ζ) exceeds e^c.
    unbounded = mhpo.gradient_weight("mhpo", r.log(), torch.ones_like(r), c=c, use_lfm=False, use_dhp=False)
    assert unbounded.max().item() > math.exp(c)


@pytest.mark.parametrize("r", [0.05, 0.7, 1.0, 1.6, 25.0])
def test_ablations_match_reference(r):
    for flags in ({"use_lfm": False}, {"use_dhp": False}, {"use_lfm": False, "use_dhp": False}):
        exact = reference(r, lfm=flags.get("use_lfm", True), dhp=flags.get("use_dhp", True))
        w = mhpo.gradient_weight("mhpo", torch.tensor([math.log(r)], dtype=F64), torch.ones(1, dtype=F64), **flags)
        assert w.item() == pytest.approx(exact["weight"], rel=1e-13)


def test_both_ablations_off_equals_unclipped(batch):
    off = mhpo.policy_loss("mhpo", *batch.inputs(), use_lfm=False, use_dhp=False)
    unclipped = mhpo.policy_loss("unclipped", *batch.inputs())
    torch.testing.assert_close(off.per_token, unclipped.per_token, rtol=1e-15, atol=0)
    g1, = torch.autograd.grad(off.loss, batch.logp)
    g2, = torch.autograd.grad(unclipped.loss, batch.logp)
    torch.testing.assert_close(g1, g2, rtol=1e-15, atol=0)


def test_normalize_on_policy_makes_weight_one_at_r_one(batch):
    w = mhpo.gradient_weight("mhpo", torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64), normalize_on_policy=True)
    assert w.item() == pytest.approx(1.0, rel=1e-15)
    plain = mhpo.policy_loss("mhpo", *batch.inputs())
    normed = mhpo.policy_loss("mhpo", *batch.inputs(), normalize_on_policy=True)
    zeta0 = math.log(2) ** 1.5 + (math.log(2) / 0.8) ** 2
    torch.testing.assert_close(normed.per_token, plain.per_token * math.exp(zeta0), rtol=1e-14, atol=0)


def test_hazard_is_decoupled():
    """Changing the upward hazard leaves downward shifts almost untouched, and vice versa:
    at r = 0.2 (ψ < 0) softplus(ψ) is small, so λ₊ matters far less than λ₋."""
    down = torch.tensor([math.log(0.2)], dtype=F64)
    one = torch.ones(1, dtype=F64)
    base = mhpo.gradient_weight("mhpo", down, one).item()
    loose_up = mhpo.gradient_weight("mhpo", down, one, lam_pos=2.0).item()
    loose_down = mhpo.gradient_weight("mhpo", down, one, lam_neg=1.6).item()
    assert abs(loose_down - base) > 10 * abs(loose_up - base)


def test_gradcheck_without_hazard():
    """ζ is a stop-gradient, so only the ζ = 0 form is a true gradient of its own value."""
    b = make_batch(seed=31, batch=3, length=4)
    fn = lambda logp: mhpo.policy_loss("mhpo", logp, b.old_logp, b.advantages, b.mask, use_dhp=False).loss  # noqa: E731
    assert torch.autograd.gradcheck(fn, (b.logp,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_hazard_is_stop_gradient():
    """With the hazard on, autograd's gradient is exp(ψ − ζ)·sech² (ζ held fixed), which
    differs from the derivative of the loss value: ζ must not be differentiated."""
    logp = torch.tensor([[math.log(2.0)]], dtype=F64, requires_grad=True)
    old, adv, mask = torch.zeros_like(logp), torch.ones(1, dtype=F64), torch.ones_like(logp)
    fn = lambda x: mhpo.policy_loss("mhpo", x, old, adv, mask).loss  # noqa: E731
    (grad,) = torch.autograd.grad(fn(logp), logp)
    h = 1e-6
    numeric = (fn(logp.detach() + h) - fn(logp.detach() - h)).item() / (2 * h)
    assert grad.item() == pytest.approx(-reference(2.0)["weight"], rel=1e-12)
    assert abs(grad.item() - numeric) > 0.05
