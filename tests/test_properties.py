"""Property-based tests: random shapes, masks and values for every objective."""

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mhpo
from batches import SELECTION_OFF

F64 = torch.float64
NAMES = st.sampled_from(mhpo.list_objectives())
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw, max_batch=6, max_length=9):
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_length))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-4, 0.3, 2.0, 30.0]))
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=gen, dtype=F64) * 5
    delta = torch.randn(batch, length, generator=gen, dtype=F64) * scale
    old = old - delta.clamp(min=0)  # log-probabilities, both <= 0, δ as drawn
    logp = (old + delta).requires_grad_(True)
    mask = (torch.rand(batch, length, generator=gen) < draw(st.floats(0.0, 1.0))).to(F64)
    advantages = torch.randn(batch, generator=gen, dtype=F64) * draw(st.sampled_from([0.0, 1.0, 10.0]))
    return logp, old, advantages, mask


@SETTINGS
@given(name=NAMES, inputs=batches(), aggregation=st.sampled_from(mhpo.AGGREGATIONS))
def test_finite_masked_and_gradient_matches_weight(name, inputs, aggregation):
    logp, old, advantages, mask = inputs
    out = mhpo.policy_loss(name, logp, old, advantages, mask, aggregation=aggregation)
    assert torch.isfinite(out.loss)
    assert torch.all(out.per_token[mask == 0] == 0)
    (grad,) = torch.autograd.grad(mhpo.policy_loss(name, logp, old, advantages, mask, aggregation="token_sum").loss, logp)
    weight = mhpo.gradient_weight(name, logp.detach() - old, advantages.unsqueeze(-1), mask=mask, logp=logp.detach())
    expected = -advantages.unsqueeze(-1) * weight * mask
    if not mhpo.get_objective(name).homogeneous:  # no weight form where A = 0 (test_contract.py)
        signal = (advantages != 0).unsqueeze(-1)
        grad, expected = grad * signal, expected * signal
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(grad).all()


@SETTINGS
@given(name=NAMES, inputs=batches(max_batch=8), split=st.integers(1, 7))
def test_any_split_point_reproduces_the_full_batch(name, inputs, split):
    logp, old, advantages, mask = inputs
    split = min(split, logp.shape[0])
    norms = mhpo.global_normalisers(mask, max_length=logp.shape[1])
    norms.update(SELECTION_OFF.get(name, {}))  # a selection across the call's tokens moves with the split
    alpha = float(mhpo.adaptive_alpha(advantages, mask=mask)) if mhpo.get_objective(name).hysteresis == "adaptive" else None
    full = mhpo.policy_loss(name, logp, old, advantages, mask, hysteresis=alpha, **norms).loss
    parts = sum(
        mhpo.policy_loss(name, logp[r], old[r], advantages[r], mask[r], hysteresis=alpha, **norms).loss
        for r in (slice(0, split), slice(split, None))
        if logp[r].shape[0] > 0
    )
    torch.testing.assert_close(parts, full, rtol=1e-11, atol=1e-12)


@SETTINGS
@given(
    rewards=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=24),
    group_size=st.integers(1, 6),
    scale=st.sampled_from(["group", "batch", "none", "valid"]),
)
def test_group_advantages_are_centred_per_group(rewards, group_size, scale):
    rewards = rewards[: len(rewards) // group_size * group_size] or [0.0] * group_size
    r = torch.tensor(rewards, dtype=F64)
    adv = mhpo.group_advantages(r, group_size, scale=scale).view(-1, group_size)
    assert torch.isfinite(adv).all()
    sums = adv.sum(-1).abs()
    assert torch.all(sums <= 1e-9 * (1 + adv.abs().sum(-1)))
    constant = r.view(-1, group_size).amax(-1) == r.view(-1, group_size).amin(-1)
    assert torch.all(adv[constant] == 0)


@SETTINGS
@given(signs=st.lists(st.sampled_from([-1.0, 0.0, 1.0]), min_size=1, max_size=50), alpha_min=st.floats(0, 1))
def test_adaptive_alpha_in_range_and_follows_rule(signs, alpha_min):
    alpha = mhpo.adaptive_alpha(torch.tensor(signs, dtype=F64), alpha_min=alpha_min).item()
    pos, neg = signs.count(1.0), signs.count(-1.0)
    expected = 1.0 if neg == 0 else min(max(pos / neg, alpha_min), 1.0)
    assert math.isclose(alpha, expected, rel_tol=1e-15, abs_tol=1e-15)
    assert alpha_min - 1e-15 <= alpha <= 1.0 or neg == 0
