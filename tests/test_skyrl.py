"""SkyRL as a third host: registration, parity with SkyRL's own losses, and the same loss and
gradient from rewards through SkyRL's own advantage and loss-reduction path as through mhpo.

Runs in the SkyRL environment (``make test-skyrl``), since SkyRL pins transformers and peft.
Named differences with SkyRL's own losses:

* its losses return the token sum; the loss reduction is applied to the advantages before;
* ``dppo``'s value is the paper's −r·A·M, mhpo's −M·sg[r]·A·logp: the gradients agree;
* ``cispo``'s default lower clip is 1 − 0 (every weight below 1 is raised to 1), mhpo's none;
* ``kl_cov``'s ``kl_cov_frac`` defaults to 0.2 (20% of the tokens), verl's and mhpo's to 2e-4;
* ``clip_cov`` draws with the global torch generator: compared where every candidate is taken;
* ``regular``, ``dual_clip``, ``cispo`` and ``dppo`` exponentiate δ in float32 whatever the
  input dtype (SkyRL's ``safe_exp_delta``): they agree to float32 round-off (``FLOAT32_EXP``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import mhpo
from batches import make_batch, probability_batch

pytest.importorskip("skyrl", reason="the SkyRL integration needs mhpo[skyrl] (make test-skyrl)")

from mhpo.integrations import skyrl as plugin  # noqa: E402

ppo = plugin.ppo_utils
EXPRESSIBLE = [n for n in mhpo.list_objectives() if plugin.expressible(n)]
ROUND_OFF = dict(rtol=1e-12, atol=1e-14)
FLOAT32_EXP = dict(rtol=4e-7, atol=1e-9)  # a few float32 ulps (2^-24 ≈ 6e-8) of the ratio
SAFE_EXP = {"regular", "dual_clip", "cispo", "dppo"}


def algorithm_config(**changes):
    config = plugin.AlgorithmConfig()
    for key, value in changes.items():
        target = config
        *path, last = key.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return config


def test_every_expressible_objective_is_registered_and_skyrl_keeps_its_own():
    losses = ppo.PolicyLossRegistry._functions
    estimators = ppo.AdvantageEstimatorRegistry._functions
    assert sorted(set(mhpo.list_objectives()) - set(EXPRESSIBLE)) == ["clip_cov", "dro", "kl_cov"]
    for name in EXPRESSIBLE:
        assert losses["mhpo_" + name].__name__ == f"mhpo_{name}_policy_loss"
        assert estimators["mhpo_" + name].__name__ == f"mhpo_{name}_advantage"
    for own in ("gspo", "sapo", "cispo", "clip_cov", "kl_cov", "regular", "dppo"):
        assert not losses[own].__name__.startswith("mhpo_")
    assert losses["mhpo"].__name__ == "mhpo_mhpo_policy_loss" and losses["grpo"].__name__ == "mhpo_grpo_policy_loss"
    with pytest.raises(ValueError, match="'dro' is not positively homogeneous in A"):
        plugin.register("dro")


# SkyRL policy_loss_type, SkyRL config changes, mhpo objective, its hyperparameters, gradient only
CASES = [
    ("regular", {"eps_clip_low": 0.2, "eps_clip_high": 0.28}, "grpo", {"eps_low": 0.2, "eps_high": 0.28}, False),
    ("dual_clip", {"clip_ratio_c": 3.0}, "grpo", {"dual_clip": 3.0}, False),
    ("gspo", {"eps_clip_low": 3e-4, "eps_clip_high": 4e-4}, "gspo", {}, False),
    ("sapo", {"sapo.tau_pos": 1.0, "sapo.tau_neg": 1.05}, "sapo", {"tau_pos": 1.0, "tau_neg": 1.05}, False),
    ("cispo", {}, "cispo", {"eps_low": 0.0, "eps_high": 5.0}, False),
    ("dppo", {"dppo.dppo_type": "binary_tv", "dppo.delta_low": 0.15, "dppo.delta_high": 0.15}, "dppo_tv", {}, True),
    ("dppo", {"dppo.dppo_type": "binary_kl", "dppo.delta_low": 0.05, "dppo.delta_high": 0.05}, "dppo_kl", {}, True),
    ("clip_cov", {"clip_cov.clip_ratio": 1.0, "clip_cov.clip_cov_lb": 0.2, "clip_cov.clip_cov_ub": 3.0}, "clip_cov",
     {"clip_cov_ratio": 1.0, "clip_cov_lb": 0.2, "clip_cov_ub": 3.0}, False),
    ("kl_cov", {"kl_cov.kl_cov_frac": 0.2, "kl_cov.ppo_kl_coef": 0.5}, "kl_cov", {"kl_cov_ratio": 0.2, "ppo_kl_coef": 0.5}, False),
]  # fmt: skip


@pytest.mark.parametrize("loss_type, changes, name, ours, gradient_only", CASES, ids=[c[0] + "-" + c[2] for c in CASES])
def test_skyrl_own_loss_equals_the_objective(loss_type, changes, name, ours, gradient_only):
    b = probability_batch()
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 0, 0.5, 0, 1], dtype=torch.float64)
    advantages = mhpo.group_advantages(rewards, 3)
    expected = mhpo.policy_loss(name, b.logp, b.old_logp, advantages, b.mask, aggregation="token_sum", **ours)
    (expected_grad,) = torch.autograd.grad(expected.loss, b.logp)
    config = algorithm_config(policy_loss_type=loss_type, loss_reduction="token_mean", **changes)
    fn = ppo.PolicyLossRegistry.get(loss_type)
    loss, _ = fn(b.logp, b.old_logp, advantages.unsqueeze(-1).expand_as(b.mask), config, b.mask)
    (grad,) = torch.autograd.grad(loss, b.logp)
    tolerance = FLOAT32_EXP if loss_type in SAFE_EXP else ROUND_OFF
    if not gradient_only:
        torch.testing.assert_close(loss, expected.loss, **tolerance)
    torch.testing.assert_close(grad, expected_grad, **tolerance)
    assert expected_grad.abs().max() > 1e-3


REDUCIBLE = [n for n in EXPRESSIBLE if mhpo.get_objective(n).aggregation in plugin.SKYRL_REDUCTIONS]


@pytest.mark.parametrize("name", REDUCIBLE)
def test_skyrl_path_from_rewards_equals_mhpo(name):
    """SkyRL's compute_advantages_and_returns with the mhpo_<name> estimator (groups
    interleaved), its loss reduction applied to the advantages, and the registered loss over
    micro-batches give mhpo's loss and gradient from the same rewards."""
    b = make_batch(batch=8, seed=41, spread=0.5, group_size=4, empty_row=False)
    B, T = b.mask.shape
    rewards = torch.tensor([(i * 3) % 4 / 3 for i in range(B)], dtype=torch.float64)
    spec = mhpo.get_objective(name)
    off = {"m2_threshold": 1e9} if spec.selection else {}  # per micro-batch by design
    batch = mhpo.prepare_rollout(name, rewards, b.mask, group_size=4, max_length=T)
    ours = mhpo.policy_loss(name, b.logp, b.old_logp, batch.advantages, b.mask, **batch.loss_options(), **off)
    (ours_grad,) = torch.autograd.grad(ours.loss, b.logp)

    perm = torch.tensor([4, 0, 5, 1, 6, 2, 7, 3])
    uids = np.array(["p1" if int(i) >= 4 else "p0" for i in perm])
    token_rewards = torch.zeros_like(b.mask)
    token_rewards[torch.arange(B), b.mask.sum(-1).long() - 1] = rewards
    reduction = plugin.SKYRL_REDUCTIONS[spec.aggregation]
    config = algorithm_config(advantage_estimator=f"mhpo_{name}", policy_loss_type=f"mhpo_{name}",
                              loss_reduction=reduction, max_seq_len=T)  # fmt: skip
    advantages, _ = ppo.compute_advantages_and_returns(token_rewards[perm], b.mask[perm], uids, f"mhpo_{name}", config)
    scaled = ppo.apply_loss_reduction_to_advantages_minibatch(advantages, b.mask[perm], reduction, 3, T)
    fn = ppo.PolicyLossRegistry.get(f"mhpo_{name}")
    if off:
        fn = plugin.make_policy_loss(name, off)
    logp = b.logp.detach()[perm].requires_grad_(True)
    loss = sum(fn(logp[rows], b.old_logp[perm][rows], scaled[rows], config, b.mask[perm][rows])[0]
               for rows in torch.arange(B).split(3))  # fmt: skip
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(loss, ours.loss, **ROUND_OFF)
    torch.testing.assert_close(grad, ours_grad[perm], **ROUND_OFF)
    assert ours_grad.abs().max() > 1e-3


def test_a_reduction_skyrl_cannot_express_is_said():
    b = make_batch(seed=3, empty_row=False)
    config = algorithm_config(policy_loss_type="luspo", loss_reduction="sequence_mean")
    with pytest.warns(UserWarning, match="'luspo' aggregates as seq_mean_token_sum .*no SkyRL reduction"):
        ppo.PolicyLossRegistry.get("luspo")(b.logp, b.old_logp, b.advantages.unsqueeze(-1).expand_as(b.mask), config, b.mask)


def test_skyrl_clip_config_reaches_the_objective():
    b = make_batch(seed=4, spread=0.9, empty_row=False)
    config = algorithm_config(policy_loss_type="grpo", loss_reduction="token_mean", eps_clip_high=0.28)
    tokens = b.advantages.unsqueeze(-1).expand_as(b.mask)
    loss, _ = ppo.PolicyLossRegistry.get("grpo")(b.logp, b.old_logp, tokens, config, b.mask)
    expected = mhpo.policy_loss("grpo", *b.inputs(), aggregation="token_sum", eps_high=0.28).loss
    torch.testing.assert_close(loss, expected, **ROUND_OFF)
    assert dataclasses.is_dataclass(config)
