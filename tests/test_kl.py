"""KL estimators and the KL / entropy terms of policy_loss."""

import math

import pytest
import torch

import mhpo
from batches import make_batch

F64 = torch.float64


@pytest.mark.parametrize(
    "estimator, expected",
    # ρ = ref − logp = 1: k1 = −1, k2 = 1/2, k3 = e − 1 − 1;  ρ = −0.5: k1 = 0.5, k2 = 0.125, k3 = e^−0.5 − 0.5
    [("k1", [-1.0, 0.5]), ("k2", [0.5, 0.125]), ("k3", [math.e - 2, math.exp(-0.5) - 0.5])],
)
def test_kl_estimators(estimator, expected):
    logp = torch.tensor([[0.0, 0.0]], dtype=F64)
    ref = torch.tensor([[1.0, -0.5]], dtype=F64)
    torch.testing.assert_close(mhpo.kl_penalty(logp, ref, estimator), torch.tensor([expected], dtype=F64), rtol=1e-15, atol=0)


def test_kl_term_added_per_token_and_logged(batch):
    base = mhpo.policy_loss("mhpo", *batch.inputs())
    with_kl = mhpo.policy_loss("mhpo", *batch.inputs(), ref_logp=batch.ref_logp, beta=0.05)
    k3 = mhpo.kl_penalty(batch.logp.detach(), batch.ref_logp, "k3") * batch.mask
    torch.testing.assert_close(with_kl.per_token, base.per_token + 0.05 * k3, rtol=1e-14, atol=1e-16)
    expected_metric = (k3.sum() / batch.mask.sum()).item()
    assert with_kl.metrics["kl/k3"].item() == pytest.approx(expected_metric, rel=1e-13)
    logged_only = mhpo.policy_loss("mhpo", *batch.inputs(), ref_logp=batch.ref_logp, kl_estimator="k2")
    torch.testing.assert_close(logged_only.loss, base.loss, rtol=0, atol=0)
    assert "kl/k2" in logged_only.metrics


def test_kl_gradcheck():
    b = make_batch(seed=41, batch=3, length=3)
    for estimator in ("k1", "k2", "k3"):
        fn = lambda x, e=estimator: mhpo.kl_penalty(x, b.ref_logp, e)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (b.logp,))


def test_entropy_bonus(batch):
    entropy = torch.rand(batch.mask.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    base = mhpo.policy_loss("grpo", *batch.inputs(), aggregation="token_sum")
    bonus = mhpo.policy_loss("grpo", *batch.inputs(), aggregation="token_sum", entropy=entropy, entropy_coef=0.01)
    assert bonus.loss.item() == pytest.approx(base.loss.item() - 0.01 * (entropy * batch.mask).sum().item(), rel=1e-13)
    assert bonus.metrics["entropy/mean"].item() == pytest.approx(
        ((entropy * batch.mask).sum() / batch.mask.sum()).item(), rel=1e-14
    )


def test_is_weights_scale_the_policy_term_only(batch):
    weights = 0.5 + torch.rand(batch.mask.shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    base = mhpo.policy_loss("mhpo", *batch.inputs(), aggregation="token_sum", ref_logp=batch.ref_logp, beta=0.1)
    plain = mhpo.policy_loss("mhpo", *batch.inputs(), aggregation="token_sum")
    weighted = mhpo.policy_loss("mhpo", *batch.inputs(), aggregation="token_sum", ref_logp=batch.ref_logp,
                                beta=0.1, is_weights=weights)  # fmt: skip
    kl = base.per_token - plain.per_token
    torch.testing.assert_close(weighted.per_token, plain.per_token * weights * batch.mask + kl, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="is_weights must be >= 0"):
        mhpo.policy_loss("mhpo", *batch.inputs(), is_weights=-weights)
