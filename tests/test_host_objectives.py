"""The objectives the hosts ship, against scalar float64 references written from the
equations of docs/objectives.md#what-the-hosts-ship with Python's math module, token by token:
no tensor code of the library is reused. (The hosts' own implementations are compared in
test_host_parity.py, test_trl_parity.py and test_skyrl.py.)"""

from __future__ import annotations

import math

import pytest
import torch

import mhpo
from batches import probability_batch


def _rows(b):
    logp, old, mask = b.logp.detach().tolist(), b.old_logp.tolist(), b.mask.tolist()
    return logp, old, mask, b.advantages.tolist()


def _check(name, b, per_token_grad, aggregation="token_sum", **hp):
    """per_token_grad(i, t) -> ∂ℓ/∂logp at a counted token (token_sum aggregation)."""
    out = mhpo.policy_loss(name, *b.inputs(), aggregation=aggregation, **hp)
    (grad,) = torch.autograd.grad(out.loss, b.logp)
    B, T = b.mask.shape
    expected = [[per_token_grad(i, t) if b.mask[i, t] else 0.0 for t in range(T)] for i in range(B)]
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert grad.abs().max() > 1e-3
    return out


def test_topr_scalar_reference():
    b = probability_batch()
    logp, old, mask, adv = _rows(b)

    def grad(i, t):
        if adv[i] > 0:
            return -adv[i]
        seq = sum(logp[i][u] - old[i][u] for u in range(len(mask[i])) if mask[i][u])
        return -adv[i] * min(math.exp(seq), 1.0)

    _check("topr", b, grad)


def test_vespo_scalar_reference():
    b = probability_batch()
    logp, old, mask, adv = _rows(b)

    def grad(i, t):
        seq = sum(logp[i][u] - old[i][u] for u in range(len(mask[i])) if mask[i][u])
        log_w = min(max(seq, math.log(1e-8)), 20.0)
        k, lam = (2.0, 3.0) if adv[i] >= 0 else (3.0, 2.0)
        return -adv[i] * math.exp(k * log_w) * math.exp(lam * (1 - math.exp(log_w)))

    _check("vespo", b, grad)


def test_dppo_tv_scalar_reference():
    b = probability_batch()
    logp, old, mask, adv = _rows(b)

    def grad(i, t):
        p, q = math.exp(logp[i][t]), math.exp(old[i][t])
        inside = (p - q <= 0.15) if adv[i] > 0 else (p - q >= -0.15)
        return -adv[i] * (p / q) * inside

    out = _check("dppo_tv", b, grad)
    assert out.metrics["clip/high_frac"] + out.metrics["clip/low_frac"] > 0


def test_dppo_kl_scalar_reference():
    b = probability_batch()
    logp, old, mask, adv = _rows(b)

    def grad(i, t):
        p, q = math.exp(logp[i][t]), math.exp(old[i][t])
        kl = q * math.log(q / p) + (1 - q) * math.log((1 - q + 1e-8) / (1 - p + 1e-8))
        inside = (kl <= 0.05 or p <= q) if adv[i] > 0 else (kl <= 0.05 or p >= q)
        return -adv[i] * (p / q) * inside

    out = _check("dppo_kl", b, grad)
    assert out.metrics["clip/high_frac"] + out.metrics["clip/low_frac"] > 0


def test_dro_scalar_reference():
    b = probability_batch()
    logp, old, mask, adv = _rows(b)
    _check("dro", b, lambda i, t: -adv[i] + 0.3 * (logp[i][t] - old[i][t]), dro_beta=0.3)


def test_m2po_scalar_reference():
    b = probability_batch()
    logp, old, mask, adv = _rows(b)
    tokens = [(i, t) for i in range(len(mask)) for t in range(len(mask[i])) if mask[i][t]]
    sq = {(i, t): (logp[i][t] - old[i][t]) ** 2 for i, t in tokens}
    ranked = sorted(tokens, key=lambda k: -sq[k])
    drop = 0  # the fewest largest δ² to drop so that the rest's mean is at most τ
    while drop < len(ranked) and sum(sq[k] for k in ranked[drop:]) / (len(ranked) - drop) > 0.04:
        drop += 1
    dropped = set(ranked[:drop])
    assert 0 < drop < len(ranked)
    _check("m2po", b, lambda i, t: 0.0 if (i, t) in dropped else -adv[i] * math.exp(logp[i][t] - old[i][t]))


@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_kl_cov_scalar_reference(ratio):
    b = probability_batch()
    logp, old, mask, adv = _rows(b)
    tokens = [(i, t) for i in range(len(mask)) for t in range(len(mask[i])) if mask[i][t]]
    mean_a = sum(adv[i] for i, _ in tokens) / len(tokens)
    mean_l = sum(logp[i][t] for i, t in tokens) / len(tokens)
    cov = {(i, t): (adv[i] - mean_a) * (logp[i][t] - mean_l) for i, t in tokens}
    chosen = set(sorted(tokens, key=lambda k: -cov[k])[: max(int(len(tokens) * ratio), 1)])

    def grad(i, t):
        delta = logp[i][t] - old[i][t]
        penalty = 0.7 * math.copysign(1.0, delta) if (i, t) in chosen and delta != 0 else 0.0
        return -adv[i] * math.exp(delta) + penalty

    _check("kl_cov", b, grad, kl_cov_ratio=ratio, ppo_kl_coef=0.7)


def test_clip_cov_takes_every_candidate_at_ratio_one():
    b = probability_batch()
    logp, old, mask, adv = _rows(b)
    tokens = [(i, t) for i in range(len(mask)) for t in range(len(mask[i])) if mask[i][t]]
    mean_a = sum(adv[i] for i, _ in tokens) / len(tokens)
    mean_l = sum(logp[i][t] for i, t in tokens) / len(tokens)

    def grad(i, t):
        r = math.exp(logp[i][t] - old[i][t])
        unclipped = (r <= 1.2) if adv[i] >= 0 else (r >= 0.8)
        cov = (adv[i] - mean_a) * (logp[i][t] - mean_l)
        candidate = (unclipped or adv[i] == 0) and 0.2 < cov < 3.0
        return 0.0 if candidate or not unclipped else -adv[i] * r

    out = _check("clip_cov", b, grad, clip_cov_ratio=1.0, clip_cov_lb=0.2, clip_cov_ub=3.0)
    assert out.metrics["cov/selected_frac"] > 0


def test_clip_cov_draw_is_seeded_and_reproducible():
    b = probability_batch()
    kwargs = dict(clip_cov_ratio=0.1, clip_cov_lb=0.0, clip_cov_ub=10.0)
    first = mhpo.policy_loss("clip_cov", *b.inputs(), aggregation="token_sum", **kwargs).per_token
    again = mhpo.policy_loss("clip_cov", *b.inputs(), aggregation="token_sum", **kwargs).per_token
    other = mhpo.policy_loss("clip_cov", *b.inputs(), aggregation="token_sum", seed=1, **kwargs).per_token
    assert torch.equal(first, again) and not torch.equal(first, other)
