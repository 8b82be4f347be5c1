"""Each objective's whole recipe lives in the registry, and one library step per rollout batch
turns rewards and masks into what every micro-batch needs."""

import dataclasses
import inspect

import pytest
import torch

import mhpo
from mhpo.objectives.registry import ADVANTAGE_SCALES, RESERVED_NAMES, register_objective


def test_reserved_names_are_exactly_policy_losss_keywords():
    keywords = set(inspect.signature(mhpo.policy_loss).parameters) - {"hyperparameters"}
    assert keywords == RESERVED_NAMES


def test_registration_refuses_a_hyperparameter_that_policy_loss_would_take():
    @dataclasses.dataclass(frozen=True)
    class WithBeta:
        beta: float = 0.5

    with pytest.raises(ValueError, match="beta of 'kl_thing' clash with keywords of mhpo.policy_loss"):
        register_objective("kl_thing", config=WithBeta, weight=lambda *a: None)
    assert "kl_thing" not in mhpo.list_objectives()


@pytest.mark.parametrize("name", mhpo.list_objectives())
def test_every_recipe_is_complete_and_valid(name):
    spec = mhpo.get_objective(name)
    assert spec.aggregation in mhpo.AGGREGATIONS and spec.advantage_scale in ADVANTAGE_SCALES
    assert isinstance(spec.rollout, mhpo.RolloutRules)
    assert (spec.alpha_min is not None) == (spec.hysteresis == "adaptive")


def test_the_recipes_that_differ_from_grpo():
    dapo, a_hpo, hpo, dr_grpo = (mhpo.get_objective(n) for n in ("dapo", "a_hpo", "hpo", "dr_grpo"))
    assert dapo.rollout == mhpo.RolloutRules(dynamic_sampling=True, overlong_filter=True, overlong_buffer_fraction=0.25)
    assert dapo.rollout.overlong_buffer(20480) == 5120 and dapo.rollout.overlong_buffer(16) == 4
    assert (a_hpo.hysteresis, a_hpo.alpha_min, hpo.hysteresis, dr_grpo.advantage_scale) == ("adaptive", 0.1, 0.6, "none")
    others = [mhpo.get_objective(n) for n in mhpo.list_objectives() if n != "dapo"]
    assert all(spec.rollout == mhpo.RolloutRules() for spec in others)


REWARDS = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]])


def test_prepare_rollout_by_hand():
    # Dr. GRPO: no std scaling. Group 1 mean 1/4, group 2 mean 1/2.
    batch = mhpo.prepare_rollout("dr_grpo", REWARDS, MASK, group_size=4, max_length=3)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5], dtype=torch.float64)
    torch.testing.assert_close(batch.advantages, expected, rtol=0, atol=1e-15)
    assert batch.hysteresis is None and batch.advantage_scale == "none"
    # 15 counted tokens in 7 completions with any (row 5 has none).
    assert batch.normalisers == {"num_tokens": 15.0, "num_seqs": 7.0, "mean_length": 15 / 7, "max_length": 3}
    # A-HPO: A > 0 on rows 0, 4, 5 and A < 0 on rows 1, 2, 3, 6, 7; row 5 has no counted token,
    # so n+ = 2, n- = 5 and α = 2/5.
    a_hpo = mhpo.prepare_rollout("a_hpo", REWARDS, MASK, group_size=4)
    assert a_hpo.advantage_scale == "group" and float(a_hpo.hysteresis) == pytest.approx(2 / 5, abs=1e-15)
    std1 = (3 * 0.25**2 + 0.75**2) ** 0.5 / 3**0.5  # Bessel-corrected std of (1, 0, 0, 0)
    assert float(a_hpo.advantages[0]) == pytest.approx(0.75 / (std1 + 1e-6), abs=1e-12)
    assert float(mhpo.prepare_rollout("a_hpo", REWARDS, MASK, group_size=4, alpha_min=0.7).hysteresis) == 0.7
    assert float(mhpo.prepare_rollout("hpo", REWARDS, MASK, group_size=4).hysteresis) == 0.6  # exactly
    assert mhpo.prepare_rollout("grpo", REWARDS, MASK, group_size=4, advantage_scale="none").advantage_scale == "none"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "grpo", "alpha_min": 0.3}, "alpha_min only applies with adaptive hysteresis"),
        ({"name": "grpo", "advantage_scale": "std"}, "Unknown advantage scale 'std'"),
        ({"name": "hpo", "hysteresis": 1.5}, "hysteresis must be in \\[0, 1\\]"),
    ],
)
def test_prepare_rollout_refuses_what_policy_loss_refuses(options, message):
    with pytest.raises(ValueError, match=message):
        mhpo.prepare_rollout(options.pop("name"), REWARDS, MASK, group_size=4, **options)


@pytest.mark.parametrize("name", mhpo.list_objectives())
def test_micro_batches_with_the_batch_options_equal_the_full_batch(name):
    """The step's α and normalisers make split micro-batches sum to the full-batch gradient
    (a selection across the call's tokens switched off: it moves with the split by design)."""
    from batches import SELECTION_OFF, make_batch

    b = make_batch(seed=3)
    rewards = (torch.arange(b.mask.shape[0]) % 3 == 0).double()
    group = 4 if b.mask.shape[0] % 4 == 0 else 2
    batch = mhpo.prepare_rollout(name, rewards, b.mask, group_size=group, max_length=b.mask.shape[1])
    off = SELECTION_OFF.get(name, {})
    full = mhpo.policy_loss(name, b.logp, b.old_logp, batch.advantages, b.mask, **batch.loss_options(), **off)
    (full_grad,) = torch.autograd.grad(full.loss, b.logp)
    grads = []
    for rows in torch.arange(b.mask.shape[0]).split(3):
        logp = b.logp.detach()[rows].requires_grad_(True)
        out = mhpo.policy_loss(name, logp, b.old_logp[rows], batch.advantages[rows], b.mask[rows],
                               **batch.loss_options(), **off)  # fmt: skip
        grads.append(torch.autograd.grad(out.loss, logp)[0])
    torch.testing.assert_close(torch.cat(grads), full_grad, rtol=1e-13, atol=1e-15)
