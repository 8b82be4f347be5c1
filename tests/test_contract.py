"""The contract every registered objective must satisfy, checked for all of them in one place."""

from __future__ import annotations

import math

import pytest
import torch

import mhpo
from batches import SELECTION_OFF, SEQUENCE_LEVEL, make_batch

ALL = mhpo.list_objectives()


def global_normalisers(mask: torch.Tensor, max_length: int) -> dict:
    lengths = mask.sum(-1)
    seqs = int((lengths > 0).sum())
    return {
        "num_tokens": float(mask.sum()),
        "num_seqs": seqs,
        "mean_length": float(lengths.sum()) / seqs,
        "max_length": max_length,
    }


def fixed_hysteresis(name: str, advantages: torch.Tensor, mask: torch.Tensor):
    """A-HPO's alpha must come from the whole rollout batch when it is split."""
    return float(mhpo.adaptive_alpha(advantages, mask=mask)) if mhpo.get_objective(name).hysteresis == "adaptive" else None


def test_registry_lists_every_methods_objective():
    expected = {
        "grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "sapo", "cispo", "gmpo",
        "mhpo", "hpo", "a_hpo", "reinforce", "unclipped",
        # what the hosts ship (verl, TRL, SkyRL, ROLL, AReaL)
        "dppo_tv", "dppo_kl", "clip_cov", "kl_cov", "gpg", "dro", "vespo", "luspo", "topr", "m2po",
    }  # fmt: skip
    assert set(ALL) == expected
    assert ALL == sorted(ALL)
    assert {n for n in ALL if mhpo.get_objective(n).selection} == set(SELECTION_OFF)


@pytest.mark.parametrize("name", sorted(SELECTION_OFF))
def test_a_selection_depends_on_the_tokens_of_the_call(name):
    """What the split-invariance tests switch off is real: with the objective's defaults, the
    tokens that share a call decide what is selected, so a split changes the gradient."""
    b = make_batch(seed=2, batch=12, length=9, spread=1.5, group_size=3)
    if name == "clip_cov":
        extra = {"clip_cov_ratio": 0.2, "clip_cov_lb": 0.0, "clip_cov_ub": 10.0}
    elif name == "kl_cov":
        extra = {"kl_cov_ratio": 0.2}
    else:
        extra = {"m2_threshold": 0.1}
    full = mhpo.policy_loss(name, *b.inputs(), aggregation="token_sum", **extra)
    (full_grad,) = torch.autograd.grad(full.loss, b.logp)
    parts = [torch.autograd.grad(mhpo.policy_loss(name, b.logp[rows], b.old_logp[rows], b.advantages[rows],
                                                  b.mask[rows], aggregation="token_sum", **extra).loss, b.logp)[0]
             for rows in (slice(0, 6), slice(6, 12))]  # fmt: skip
    assert (parts[0] + parts[1] - full_grad).abs().max() > 1e-3


@pytest.mark.parametrize("name", ALL)
def test_shapes_masking_and_finiteness(name, batch):
    out = mhpo.policy_loss(name, *batch.inputs())
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.per_token.shape == batch.mask.shape
    assert torch.all(out.per_token[batch.mask == 0] == 0)
    assert all(v.dim() == 0 and not v.requires_grad for v in out.metrics.values())
    out.loss.backward()
    assert torch.isfinite(batch.logp.grad).all()
    assert torch.all(batch.logp.grad[batch.mask == 0] == 0)


@pytest.mark.parametrize("name", ALL)
def test_padding_invariance(name):
    """Extra padding columns holding garbage (−inf, NaN) change neither loss nor gradient."""
    b = make_batch(seed=1)
    extra = 3
    pad = torch.full((b.mask.shape[0], extra), -math.inf, dtype=torch.float64)
    pad[0, 0] = math.nan
    logp2 = torch.cat([b.logp.detach(), pad], dim=1).requires_grad_(True)
    old2 = torch.cat([b.old_logp, pad], dim=1)
    mask2 = torch.cat([b.mask, torch.zeros_like(pad)], dim=1)
    # dr_grpo's L must be the generation limit, not the padded width, to be padding-invariant.
    kwargs = {"max_length": 7}
    ref = mhpo.policy_loss(name, *b.inputs(), **kwargs)
    padded = mhpo.policy_loss(name, logp2, old2, b.advantages, mask2, **kwargs)
    torch.testing.assert_close(padded.loss, ref.loss, rtol=1e-13, atol=1e-15)
    ref.loss.backward()
    padded.loss.backward()
    torch.testing.assert_close(logp2.grad[:, :7], b.logp.grad, rtol=1e-13, atol=1e-15)
    assert torch.all(logp2.grad[:, 7:] == 0)


@pytest.mark.parametrize("aggregation", mhpo.AGGREGATIONS)
@pytest.mark.parametrize("name", ALL)
def test_micro_batch_split_invariance(name, aggregation):
    """Gradient accumulation over micro-batches with global normalisers = the full batch."""
    b = make_batch(seed=2)
    norms = {**global_normalisers(b.mask, max_length=7), **SELECTION_OFF.get(name, {})}
    alpha = fixed_hysteresis(name, b.advantages, b.mask)
    full = mhpo.policy_loss(name, *b.inputs(), aggregation=aggregation, hysteresis=alpha, **norms)
    full.loss.backward()
    full_grad = b.logp.grad.clone()
    b.logp.grad = None

    total = 0.0
    for rows in (slice(0, 2), slice(2, 3), slice(3, 6)):
        part = mhpo.policy_loss(
            name,
            b.logp[rows],
            b.old_logp[rows],
            b.advantages[rows],
            b.mask[rows],
            aggregation=aggregation,
            hysteresis=alpha,
            **norms,
        )
        part.loss.backward()  # accumulates into b.logp.grad
        total = total + part.loss.detach()
    torch.testing.assert_close(total, full.loss.detach(), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(b.logp.grad, full_grad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ALL)
def test_data_parallel_split_invariance(name):
    """Two ranks, each with its own copy of the parameters (here: the log-probs), summing
    their gradients (all-reduce SUM) reproduce the single-process gradient. A real two-process
    gloo run of the same check is in test_distributed.py."""
    b = make_batch(seed=3)
    aggregation = mhpo.get_objective(name).aggregation
    norms = {**global_normalisers(b.mask, max_length=7), **SELECTION_OFF.get(name, {})}
    alpha = fixed_hysteresis(name, b.advantages, b.mask)
    full = mhpo.policy_loss(name, *b.inputs(), hysteresis=alpha, **norms)
    (full_grad,) = torch.autograd.grad(full.loss, b.logp)
    grads = []
    for rows in (slice(0, 3), slice(3, 6)):
        logp_rank = b.logp.detach()[rows].clone().requires_grad_(True)
        out = mhpo.policy_loss(
            name, logp_rank, b.old_logp[rows], b.advantages[rows], b.mask[rows],
            aggregation=aggregation, hysteresis=alpha, **norms,
        )  # fmt: skip
        grads.append(torch.autograd.grad(out.loss, logp_rank)[0])
    torch.testing.assert_close(torch.cat(grads), full_grad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shift", [50.0, -50.0])
def test_extreme_log_ratios_stay_finite(name, shift):
    b = make_batch(seed=4)
    # δ = shift with both log-probabilities <= 0: the current one moves down, or the old one
    old_logp = b.old_logp - max(shift, 0.0)
    logp = (b.old_logp + min(shift, 0.0)).requires_grad_(True)
    out = mhpo.policy_loss(name, logp, old_logp, b.advantages, b.mask, ref_logp=b.ref_logp, beta=0.1)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(logp.grad).all()
    assert all(torch.isfinite(v) or torch.isnan(v) and k.startswith("grad_weight") for k, v in out.metrics.items())


@pytest.mark.parametrize("name", ALL)
def test_autograd_gradient_equals_gradient_weight(name):
    """With token_sum aggregation, ∂loss/∂logp = −A·w·mask exactly (the w of docs/objectives.md).
    An objective that is not homogeneous in A (spec.homogeneous False: DRO, Clip-Cov,
    KL-Cov) has gradient where A = 0 that no weight expresses; it is compared where A ≠ 0,
    and its own tests check the rest."""
    b = make_batch(seed=5, spread=1.2)
    extra = {"clip_cov_ratio": 0.2} if name == "clip_cov" else {"kl_cov_ratio": 0.2} if name == "kl_cov" else {}
    out = mhpo.policy_loss(name, *b.inputs(), aggregation="token_sum", **extra)
    (grad,) = torch.autograd.grad(out.loss, b.logp)
    weight = mhpo.gradient_weight(name, b.logp.detach() - b.old_logp, b.advantages.unsqueeze(-1), mask=b.mask,
                                  logp=b.logp.detach(), **extra)  # fmt: skip
    expected = -b.advantages.unsqueeze(-1) * weight * b.mask
    if not mhpo.get_objective(name).homogeneous:
        signal = (b.advantages != 0).unsqueeze(-1)
        grad, expected = grad * signal, expected * signal
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)
    # The test is not vacuous: some tokens carry gradient.
    assert (grad.abs() > 1e-3).sum() >= 5


@pytest.mark.parametrize("name", [n for n in ALL if n not in SEQUENCE_LEVEL])
def test_gradient_weight_of_1d_sweep_matches_2d(name):
    ratios = torch.logspace(-2, 2, 41, dtype=torch.float64)
    for sign in (1.0, -1.0):
        flat = mhpo.gradient_weight(name, ratios.log(), torch.full_like(ratios, sign))
        column = mhpo.gradient_weight(name, ratios.log().unsqueeze(-1), torch.full((41, 1), sign, dtype=torch.float64))
        torch.testing.assert_close(flat, column.squeeze(-1), rtol=0, atol=0)


# --- bad inputs: every one raises ValueError naming the problem -------------------------------


def _bad_cases():
    b = make_batch(seed=6)
    logp, old, adv, mask = b.logp.detach(), b.old_logp, b.advantages, b.mask
    nan_logp = logp.clone()
    nan_logp[0, 0] = math.nan
    inf_old = old.clone()
    inf_old[0, 1] = math.inf
    nan_adv = adv.clone()
    nan_adv[0] = math.nan
    half_mask = mask.clone()
    half_mask[0, 0] = 0.5
    counted = mask.nonzero()[0].tolist()  # a counted position
    nan_entropy = torch.zeros_like(logp)
    nan_entropy[counted[0], counted[1]] = math.nan
    inf_is = torch.ones_like(logp)
    inf_is[counted[0], counted[1]] = math.inf
    return [
        ("NaN entropy", dict(entropy=nan_entropy, entropy_coef=0.01), "entropy contains NaN"),
        ("NaN entropy, no bonus", dict(entropy=nan_entropy), "entropy contains NaN"),
        ("inf is_weights", dict(is_weights=inf_is), "is_weights contains NaN or inf"),
        ("negative is_weights", dict(is_weights=-torch.ones_like(logp)), "is_weights must be >= 0"),
        ("entropy shape", dict(entropy=torch.zeros(2, 2)), "entropy has shape"),
        ("shape mismatch", dict(old_logp=old[:, :-1]), "shape"),
        ("1-D logp", dict(logp=logp[0], old_logp=old[0], mask=mask[0]), "2-D"),
        ("advantages shape", dict(advantages=adv[:-1]), "advantages must have shape"),
        ("non-binary mask", dict(mask=half_mask), "only 0 and 1"),
        ("NaN logp", dict(logp=nan_logp), "logp contains NaN"),
        ("inf old_logp", dict(old_logp=inf_old), "old_logp contains NaN or inf"),
        ("NaN advantages", dict(advantages=nan_adv), "advantages contains NaN"),
        ("unknown aggregation", dict(aggregation="token_meen"), "Unknown aggregation"),
        ("negative beta", dict(beta=-1.0), "beta must be >= 0"),
        ("beta without ref", dict(beta=0.1), "needs ref_logp"),
        ("bad estimator", dict(kl_estimator="k4"), "Unknown kl_estimator"),
        ("hysteresis out of range", dict(hysteresis=1.5), "in \\[0, 1\\]"),
        ("hysteresis typo", dict(hysteresis="adaptve"), "hysteresis must be"),
        ("alpha_min without adaptive", dict(hysteresis=0.5, alpha_min=0.2), "alpha_min only applies"),
        ("entropy_coef without entropy", dict(entropy_coef=0.01), "needs entropy"),
        ("zero num_tokens", dict(num_tokens=0), "num_tokens must be"),
        ("logp not a tensor", dict(logp=[[0.0]]), "must be a torch.Tensor"),
        ("integer logp", dict(logp=torch.zeros_like(logp, dtype=torch.long)), "floating-point"),
    ]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_inputs_raise_clear_errors(name, case):
    b = make_batch(seed=6)
    _, override, message = case
    kwargs = dict(logp=b.logp.detach(), old_logp=b.old_logp, advantages=b.advantages, mask=b.mask)
    kwargs.update(override)
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("logp", "old_logp", "advantages", "mask")}
    with pytest.raises(ValueError, match=message):
        mhpo.policy_loss(name, kwargs["logp"], kwargs["old_logp"], kwargs["advantages"], kwargs["mask"], **extra)


def test_unknown_objective_lists_valid_names(batch):
    with pytest.raises(ValueError, match="Did you mean 'mhpo'.*Registered objectives: a_hpo, cispo"):
        mhpo.policy_loss("mhp", *batch.inputs())


@pytest.mark.parametrize("name", ALL)
def test_unknown_hyperparameter_is_rejected(name, batch):
    with pytest.raises(ValueError, match=f"Objective '{name}' has no hyperparameter 'epsilon'"):
        mhpo.policy_loss(name, *batch.inputs(), epsilon=0.2)


def test_misspelled_hyperparameter_gets_a_suggestion(batch):
    with pytest.raises(ValueError, match="Did you mean 'lam_neg'"):
        mhpo.policy_loss("mhpo", *batch.inputs(), lam_ng=0.8)


@pytest.mark.parametrize(
    "name, hyperparameters, message",
    [
        ("grpo", {"eps_low": 1.0}, "eps_low must be in \\[0, 1\\)"),
        ("grpo", {"eps_high": -0.1}, "eps_high must be a finite number >= 0"),
        ("grpo", {"dual_clip": 0.5}, "dual_clip must be None"),
        ("cispo", {"eps_low": -0.2}, "eps_low must be in"),
        ("sapo", {"tau_pos": 0.0}, "tau_pos must be a finite number > 0"),
        ("gmpo", {"eps_high": math.inf}, "eps_high is a log-space clip offset"),
        ("mhpo", {"c": -1.0}, "c must be a finite number > 0"),
        ("mhpo", {"lam_neg": 0}, "lam_neg must be a finite number > 0"),
        ("mhpo", {"use_dhp": "no"}, "use_dhp must be True or False"),
    ],
)
def test_out_of_range_hyperparameters(name, hyperparameters, message, batch):
    with pytest.raises(ValueError, match=message):
        mhpo.policy_loss(name, *batch.inputs(), **hyperparameters)


@pytest.mark.parametrize("name", SEQUENCE_LEVEL)
def test_sequence_level_objectives_reject_varying_token_advantages(name, batch):
    per_token = batch.advantages.unsqueeze(-1).expand_as(batch.mask).clone()
    torch.testing.assert_close(
        mhpo.policy_loss(name, batch.logp, batch.old_logp, per_token, batch.mask).loss,
        mhpo.policy_loss(name, *batch.inputs()).loss,
        rtol=0,
        atol=0,
    )
    per_token[0, 1] += 0.5
    with pytest.raises(ValueError, match="sequence-level"):
        mhpo.policy_loss(name, batch.logp, batch.old_logp, per_token, batch.mask)


def test_bool_and_int_masks_equal_float_mask(batch):
    ref = mhpo.policy_loss("mhpo", *batch.inputs())
    for mask in (batch.mask.bool(), batch.mask.long()):
        out = mhpo.policy_loss("mhpo", batch.logp, batch.old_logp, batch.advantages, mask)
        torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=0)


def test_all_padding_gives_zero_loss_not_nan():
    b = make_batch(seed=7)
    for name in ALL:
        for mode in mhpo.AGGREGATIONS:
            out = mhpo.policy_loss(name, b.logp, b.old_logp, b.advantages, torch.zeros_like(b.mask), aggregation=mode)
            assert out.loss.item() == 0.0


def test_float32_inputs_work_and_match_float64():
    b = make_batch(seed=8)
    for name in ALL:
        ref = mhpo.policy_loss(name, *b.inputs()).loss
        low = mhpo.policy_loss(
            name, b.logp.detach().float(), b.old_logp.float(), b.advantages.float(), b.mask.float()
        ).loss
        assert low.dtype == torch.float32
        torch.testing.assert_close(low.double(), ref.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ALL)
def test_half_precision_is_finite_across_the_clamp_range(name, dtype):
    """float16 overflows at e^11.1: log-ratios of 10-20 and a reference 12 nats away gave inf
    losses (clipped objectives, KL) or NaN gradients (SAPO) when computed in the input dtype."""
    b = make_batch(seed=11)
    base = b.old_logp - 32.0  # every log-probability below stays <= 0
    for shift in (-20.0, -15.0, -12.0, -10.0, 10.0, 12.0, 15.0, 20.0):
        old = base.to(dtype)
        logp = (base + shift).to(dtype).requires_grad_(True)
        ref = (base + shift + 12.0).to(dtype)
        out = mhpo.policy_loss(name, logp, old, b.advantages.to(dtype), b.mask, ref_logp=ref, beta=0.1)
        out.loss.backward()
        assert torch.isfinite(out.loss), (shift, out.loss)
        assert torch.isfinite(logp.grad).all(), shift
        assert logp.grad.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_float64_near_on_policy(dtype):
    """Computing half inputs in float32 keeps the loss as close to float64 as the inputs allow."""
    b = make_batch(seed=12, spread=0.1)
    for name in ALL:
        logp, old = b.logp.detach().to(dtype), b.old_logp.to(dtype)
        low = mhpo.policy_loss(name, logp, old, b.advantages, b.mask).loss
        ref = mhpo.policy_loss(name, logp.double(), old.double(), b.advantages, b.mask).loss
        assert low.dtype == torch.float32
        torch.testing.assert_close(low.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(0, 5), (4, 0)])
@pytest.mark.parametrize("name", ALL)
def test_empty_batches_give_a_zero_loss(name, shape):
    logp = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    out = mhpo.policy_loss(name, logp, logp.detach(), torch.zeros(shape[0], dtype=torch.float64), torch.ones(shape))
    out.loss.backward()
    assert out.loss.item() == 0.0 and out.per_token.shape == shape and logp.grad.shape == shape


READS_LOGP = [name for name in ALL if mhpo.get_objective(name).uses_logp]


@pytest.mark.parametrize("name", READS_LOGP)
def test_positive_log_probabilities_are_refused_where_the_objective_reads_them(name):
    """DPPO reads π = exp(log π) (above 1 its binary KL takes the log of a negative number and
    the token is silently masked), Clip-Cov and KL-Cov read log π: values above 0 are logits or
    a sign error, refused with the fix named. Padding may hold anything; a ratio-only objective
    cannot tell and is not checked."""
    assert {"dppo_tv", "dppo_kl", "clip_cov", "kl_cov"} <= set(READS_LOGP)
    b = make_batch(seed=21)
    logp, old = b.logp.detach().clone(), b.old_logp.clone()
    for label in ("logp", "old_logp"):
        bad_logp, bad_old = logp.clone(), old.clone()
        (bad_logp if label == "logp" else bad_old)[0, 0] = 0.5
        with pytest.raises(ValueError, match=rf"^{label} is above 0 .*'{name}' reads log-probabilities"):
            mhpo.policy_loss(name, bad_logp, bad_old, b.advantages, b.mask)
        mhpo.policy_loss(name, bad_logp, bad_old, b.advantages, b.mask, check_inputs=False)  # the caller's choice
    padded = logp.clone()
    padded[-1, :] = 3.0  # the empty last row: padding only
    assert b.mask[-1].sum() == 0 and torch.isfinite(mhpo.policy_loss(name, padded, old, b.advantages, b.mask).loss)
    rounding = logp.clone()
    rounding[0, 0] = 1e-4  # rounding above 0 is accepted
    mhpo.policy_loss(name, rounding, old, b.advantages, b.mask)
    shifted = logp + 2.0  # a ratio-only objective gives the same loss either way
    assert mhpo.policy_loss("grpo", shifted, old + 2.0, b.advantages, b.mask).loss == pytest.approx(
        mhpo.policy_loss("grpo", logp, old, b.advantages, b.mask).loss.item(), rel=1e-12)
