"""REINFORCE and the unclipped surrogate, the reference points of the studies."""

import math

import torch

import mhpo

F64 = torch.float64


def test_reinforce_and_unclipped(batch):
    out = mhpo.policy_loss("reinforce", *batch.inputs(), aggregation="token_sum")
    adv = batch.advantages.unsqueeze(-1)
    torch.testing.assert_close(out.per_token, -adv * batch.logp.detach() * batch.mask, rtol=1e-15, atol=0)
    ratio = torch.exp(batch.logp.detach() - batch.old_logp)
    out = mhpo.policy_loss("unclipped", *batch.inputs(), aggregation="token_sum")
    torch.testing.assert_close(out.per_token, -adv * ratio * batch.mask, rtol=1e-15, atol=0)


def test_unclipped_weight_is_ratio():
    r = torch.tensor([1e-3, 0.5, 3.0, 1e4], dtype=F64)
    torch.testing.assert_close(mhpo.gradient_weight("unclipped", r.log(), torch.ones(4, dtype=F64)), r, rtol=1e-14, atol=0)
    assert math.isclose(mhpo.gradient_weight("reinforce", r.log(), torch.ones(4, dtype=F64))[3].item(), 1.0)


def test_reference_objectives_gradcheck():
    from batches import make_batch

    b = make_batch(seed=61, batch=3, length=4)
    for name in ("reinforce", "unclipped"):
        fn = lambda logp, n=name: mhpo.policy_loss(n, logp, b.old_logp, b.advantages, b.mask).loss  # noqa: E731
        assert torch.autograd.gradcheck(fn, (b.logp,))
