"""Parity with the hosts' own implementations: the same float64 tensors through verl's own
registered losses (with verl's own agg_loss and global_batch_info) and through mhpo's
objective with the hyperparameters that make them the same algorithm. A verl release that
changes one of these losses fails here instead of drifting.

Known, deliberate differences are named where they apply:

* verl's ``vanilla`` always applies its dual clip (clip_ratio_c, default 3): mhpo's ``grpo``
  is compared with ``dual_clip=3``.
* verl's ``seq-mean-token-mean`` (and so ``sapo``, which forces it) and ``geo_mean`` divide by
  (n + 1e-8) where mhpo divides by n: the relative difference is at most 1e-8 / n, and those
  cases are compared at that size (``SEQ_EPS``), not at float64 round-off.
* verl's ``dppo_tv`` and ``dppo_kl`` truncate the ratio at clip_ratio_c (20 when unset): mhpo's
  DPPO is compared with ``tis_cap=20`` (the paper has no truncation, mhpo's default).
* verl's ``clip_cov`` draws its tokens with the global torch generator and mhpo's with its own
  seeded one: compared where every candidate is taken (``clip_cov_ratio=1``), where the draw
  does not matter.
"""

from __future__ import annotations

import pytest
import torch

import mhpo
from batches import make_batch, probability_batch

verl = pytest.importorskip("verl", reason="the host parity tests need mhpo[verl]")

SEQ_EPS = 1e-8  # verl's epsilon in the seq-mean-token-mean and geo_mean denominators
ROUND_OFF = dict(rtol=1e-12, atol=1e-14)

# verl loss_mode, mhpo objective, mhpo hyperparameters, verl actor-config entries, loss_agg_mode
CASES = [
    ("vanilla", "grpo", {"eps_low": 0.2, "eps_high": 0.28, "dual_clip": 3.0},
     {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}, "token-mean"),
    ("vanilla", "dr_grpo", {"eps_low": 0.2, "eps_high": 0.2, "dual_clip": 3.0}, {"clip_ratio_c": 3.0},
     "seq-mean-token-sum-norm"),
    ("vanilla", "dapo", {"dual_clip": 3.0}, {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}, "token-mean"),
    ("gspo", "gspo", {}, {"clip_ratio_low": 3e-4, "clip_ratio_high": 4e-4}, "seq-mean-token-sum"),
    ("gspo", "luspo", {}, {"clip_ratio_low": 3e-4, "clip_ratio_high": 4e-4}, "seq-mean-token-sum"),
    ("sapo", "sapo", {"tau_pos": 1.0, "tau_neg": 1.05}, {"tau_pos": 1.0, "tau_neg": 1.05}, "seq-mean-token-mean"),
    ("cispo", "cispo", {"eps_low": 0.2, "eps_high": 4.0}, {"clip_ratio_low": 0.2, "clip_ratio_high": 4.0}, "token-mean"),
    ("geo_mean", "gmpo", {"eps_low": 0.4, "eps_high": 0.4}, {"clip_ratio_low": 0.4, "clip_ratio_high": 0.4},
     "seq-mean-token-mean"),
    ("dppo_tv", "dppo_tv", {"tis_cap": 20.0}, {"clip_ratio_low": 0.15, "clip_ratio_high": 0.15, "clip_ratio_c": 20.0},
     "token-mean"),
    ("dppo_kl", "dppo_kl", {"tis_cap": 20.0}, {"clip_ratio_low": 0.05, "clip_ratio_high": 0.05, "clip_ratio_c": 20.0},
     "token-mean"),
    ("gpg", "gpg", {}, {}, "token-mean"),
    ("clip_cov", "clip_cov", {"clip_cov_ratio": 1.0, "clip_cov_lb": 0.2, "clip_cov_ub": 3.0},
     {"policy_loss": {"clip_cov_ratio": 1.0, "clip_cov_lb": 0.2, "clip_cov_ub": 3.0}}, "token-mean"),
    ("kl_cov", "kl_cov", {"kl_cov_ratio": 0.2, "ppo_kl_coef": 0.5},
     {"policy_loss": {"kl_cov_ratio": 0.2, "ppo_kl_coef": 0.5}}, "token-mean"),
    ("dro", "dro", {"dro_beta": 0.3}, {"policy_loss": {"dro_beta": 0.3}}, "token-mean"),
]  # fmt: skip
AGGREGATION = {"token-mean": "token_mean", "seq-mean-token-sum": "seq_mean_token_sum",
               "seq-mean-token-mean": "seq_mean_token_mean", "seq-mean-token-sum-norm": "seq_mean_token_sum_norm"}  # fmt: skip


def native_config(mask: torch.Tensor, entries: dict):
    """verl's own ActorConfig (its losses check the type), with its own global_batch_info."""
    from verl.workers.config import ActorConfig, PolicyLossConfig

    lengths = mask.sum(-1)
    entries = dict(entries or {})
    policy = PolicyLossConfig(**entries.pop("policy_loss", {}))
    info = {"dp_size": 1, "batch_num_tokens": float(lengths.sum()), "global_batch_size": float((lengths > 0).sum()),
            "loss_scale_factor": mask.shape[1]}  # fmt: skip
    return ActorConfig(strategy="fsdp", ppo_micro_batch_size_per_gpu=1, rollout_n=1, policy_loss=policy,
                       global_batch_info=info, **entries)  # fmt: skip


def _verl_native(mode: str):
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    fn = POLICY_LOSS_REGISTRY[mode]
    assert fn.__module__ == "verl.trainer.ppo.core_algos", f"{mode} is not verl's own loss ({fn.__module__})"
    return fn


@pytest.mark.parametrize("mode, name, ours, entries, agg", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_verl_native_loss_equals_mhpo(mode, name, ours, entries, agg):
    b = probability_batch()
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 0, 0.5, 0, 1], dtype=torch.float64)
    advantages = mhpo.group_advantages(rewards, 3, scale=mhpo.get_objective(name).advantage_scale)
    token_adv = advantages.unsqueeze(-1).expand_as(b.mask)
    expected = mhpo.policy_loss(name, b.logp, b.old_logp, advantages, b.mask, aggregation=AGGREGATION[agg],
                                max_length=b.mask.shape[1], **ours)  # fmt: skip
    (expected_grad,) = torch.autograd.grad(expected.loss, b.logp)

    config = native_config(b.mask, dict(entries))
    loss, metrics = _verl_native(mode)(b.old_logp, b.logp, token_adv, b.mask, loss_agg_mode=agg, config=config)
    (grad,) = torch.autograd.grad(loss, b.logp)
    if agg == "seq-mean-token-mean" or mode == "geo_mean":
        # verl's (n + 1e-8): each completion's term moves by at most 1e-8/n of itself (twice in
        # geo_mean: the ratio's exponent and the advantage's mean), so the loss by at most
        # 2e-8·Σ|term| / B, and each gradient entry by 2e-8 of itself.
        bound = 2 * SEQ_EPS * float((expected.per_token.abs() * b.mask).sum()) / b.mask.shape[0]
        loss_tol, grad_tol = dict(rtol=0, atol=bound), dict(rtol=2 * SEQ_EPS, atol=1e-14)
    else:
        loss_tol = grad_tol = ROUND_OFF
    torch.testing.assert_close(loss, expected.loss, **loss_tol)
    torch.testing.assert_close(grad, expected_grad, **grad_tol)
    assert expected_grad.abs().max() > 1e-3  # not vacuous
    if mode in ("dppo_tv", "dppo_kl"):  # the trust region bites on this batch
        assert expected.metrics["clip/high_frac"] + expected.metrics["clip/low_frac"] > 0
    if mode in ("clip_cov", "kl_cov"):  # and so does the covariance selection
        assert expected.metrics["cov/selected_frac"] > 0


def test_verl_clip_cov_at_its_default_ratio_selects_as_many_tokens_as_mhpo():
    """At the default ratio the draw differs (verl's global generator, mhpo's seeded one), but
    the number of tokens taken out is the same: max(⌊2e-4·N⌋, 1) = 1 here."""
    b = make_batch(batch=9, length=8, seed=83, spread=0.7, group_size=3, empty_row=False)
    advantages = mhpo.group_advantages(torch.tensor([1.0, 0, 0, 1, 1, 0, 0.5, 0, 1], dtype=torch.float64), 3)
    entries = {"policy_loss": {"clip_cov_lb": 0.0, "clip_cov_ub": 10.0}}
    _, metrics = _verl_native("clip_cov")(b.old_logp, b.logp, advantages.unsqueeze(-1).expand_as(b.mask), b.mask,
                                          loss_agg_mode="token-mean", config=native_config(b.mask, entries))  # fmt: skip
    ours = mhpo.policy_loss("clip_cov", b.logp, b.old_logp, advantages, b.mask, clip_cov_lb=0.0, clip_cov_ub=10.0)
    # verl's masked_mean divides by (N + 1e-8)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(float(ours.metrics["cov/selected_frac"]), rel=SEQ_EPS)
    assert float(ours.metrics["cov/selected_frac"]) == pytest.approx(1 / float(b.mask.sum()))


def test_gpg_advantages_follow_the_paper_and_verl_counts_zero_rewards():
    """mhpo's 'valid' scale: B / (B − M), M = completions of all-equal groups (the paper);
    verl's gpg estimator divides by the number of non-zero rewards instead. Equal when every
    informative group has no zero reward... which binary rewards never have; so they differ
    here, and the difference is exactly the factor."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    rewards = torch.tensor([1.0, 0, 0, 1, 1, 1, 0, 0, 0], dtype=torch.float64)  # one informative group of three
    mask = torch.ones(9, 4, dtype=torch.float64)
    ours = mhpo.group_advantages(rewards, 3, scale="valid")
    theirs, _ = ADV_ESTIMATOR_REGISTRY["gpg"](rewards.unsqueeze(-1) * torch.eye(4, dtype=torch.float64)[-1], mask,
                                              index=[0, 0, 0, 1, 1, 1, 2, 2, 2])  # fmt: skip
    centred = mhpo.group_advantages(rewards, 3, scale="none")
    torch.testing.assert_close(ours, centred * 9 / 3, rtol=0, atol=1e-15)  # B / (B − M) = 9 / 3
    torch.testing.assert_close(theirs[:, 0], centred * 9 / 4, rtol=0, atol=1e-15)  # B / #(R ≠ 0) = 9 / 4
