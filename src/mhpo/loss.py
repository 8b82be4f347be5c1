"""The public entry point: :func:`policy_loss` validates inputs, runs one registered objective,
applies the optional terms (hysteretic weighting, KL, entropy), aggregates and collects
metrics. :func:`gradient_weight` gives the same objective's analytic gradient weight."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from .advantages import adaptive_alpha
from .aggregation import aggregate
from .kl import KL_ESTIMATORS, kl_penalty
from .objectives import get_objective
from .objectives._common import clamp_log_ratio, log_ratio_bound, masked_fraction, masked_max, masked_mean, masked_min
from .objectives.registry import AGGREGATIONS, DEFAULT_ALPHA_MIN

Tensor = torch.Tensor
Hysteresis = float | str | Tensor | None


@dataclasses.dataclass
class LossOutput:
    """What :func:`policy_loss` returns.

    Attributes:
        loss: scalar, differentiable with respect to ``logp``.
        per_token: (B, T) unreduced loss (policy term, hysteresis, KL and entropy terms
            included), exactly 0 where mask == 0.
        metrics: detached scalar tensors, keys from docs/metrics.md.
    """

    loss: Tensor
    per_token: Tensor
    metrics: dict[str, Tensor]


def _check_tensor(name: str, value: Any, shape: tuple[int, ...] | None = None) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(value).__name__}.")
    if shape is not None and tuple(value.shape) != shape:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)} but logp has shape {shape}; "
            f"pass {name} padded to the same (B, T) as logp."
        )
    return value


# How far above 0 a log-probability may be from rounding before it is refused (for the
# objectives that read log π_θ itself; a ratio-only objective cannot tell).
LOGP_TOLERANCE = 1e-3


def _check_finite(name: str, value: Tensor, counted: Tensor | None) -> None:
    bad = ~torch.isfinite(value)
    if counted is not None:
        bad = bad & counted
    if bad.any():
        where = "at counted (mask == 1) positions " if counted is not None else ""
        raise ValueError(
            f"{name} contains NaN or inf {where}({int(bad.sum())} values); "
            "check the model's log-probs and the reward function, or mask those tokens out."
        )


def hysteresis_setting(name: str, hysteresis: Any = None, alpha_min: Any = None) -> tuple[float | str | None, float | None]:
    """The hysteresis an objective runs with, from a user's options: ``hysteresis`` (None =
    the objective's default, a number in [0, 1] or text of one, ``"adaptive"``, or ``"off"``
    for none even where the objective has one, e.g. when α is already folded into the
    advantages) and
    ``alpha_min`` (only with adaptive hysteresis; default 0.1 there). Returns (α or
    "adaptive" or None, α_min or None); raises ValueError naming the fix. Hosts' options
    (the trainer's flags, TRL's and verl's config fields) all go through here.

    >>> hysteresis_setting("a_hpo"), hysteresis_setting("grpo", "0.5"), hysteresis_setting("hpo", "adaptive", 0.2)
    (('adaptive', 0.1), (0.5, None), ('adaptive', 0.2))
    """
    spec = get_objective(name)
    if isinstance(hysteresis, str) and hysteresis.strip().lower() in ("", "none", "null"):
        hysteresis = None
    if isinstance(hysteresis, str) and hysteresis.strip().lower() == "off":  # none, whatever the recipe says
        if alpha_min is not None:
            raise ValueError("alpha_min only applies with hysteresis='adaptive'; hysteresis is 'off'.")
        return None, None
    if isinstance(hysteresis, str) and hysteresis.strip() != "adaptive":
        try:
            hysteresis = float(hysteresis)
        except ValueError:
            raise ValueError(f"hysteresis must be a number in [0, 1] or 'adaptive'; got '{hysteresis}'.") from None
    if isinstance(hysteresis, str):
        hysteresis = "adaptive"
    elif hysteresis is not None:
        if isinstance(hysteresis, bool) or not isinstance(hysteresis, (int, float)) or not 0 <= hysteresis <= 1:
            raise ValueError(f"hysteresis must be in [0, 1] (the weight of negative-advantage updates); got {hysteresis!r}.")
        hysteresis = float(hysteresis)
    effective = spec.hysteresis if hysteresis is None else hysteresis
    if alpha_min is not None:
        if effective != "adaptive":
            raise ValueError(
                f"alpha_min only applies with adaptive hysteresis, and '{spec.name}' runs with "
                f"{'no hysteresis' if effective is None else f'a fixed alpha of {effective}'}; set hysteresis to "
                "'adaptive' or drop alpha_min."
            )
        if isinstance(alpha_min, bool) or not isinstance(alpha_min, (int, float)) or not 0 <= alpha_min <= 1:
            raise ValueError(f"alpha_min must be in [0, 1]; got {alpha_min!r}.")
    elif effective == "adaptive":
        alpha_min = spec.alpha_min if spec.alpha_min is not None else DEFAULT_ALPHA_MIN
    return effective, (float(alpha_min) if alpha_min is not None else None)


def _resolve_hysteresis(name: str, hysteresis: Hysteresis, advantages: Tensor, mask: Tensor, alpha_min: float | None,
                        check: bool = True) -> Tensor | None:  # fmt: skip
    """α as a 0-dim tensor (adaptive: from these advantages), or None when off."""
    if isinstance(hysteresis, Tensor):  # a rollout batch's α, computed once by the caller
        if hysteresis.numel() != 1:
            raise ValueError("hysteresis given as a tensor must hold one value (a 0-dim alpha).")
        if alpha_min is not None:
            raise ValueError("alpha_min only applies with hysteresis='adaptive'; a given alpha has no lower bound.")
        # Used as it is, on its device: no round trip through a Python float (a host sync on a
        # GPU at every micro-batch). Its range is checked with the other inputs.
        alpha = hysteresis.detach().reshape(()).to(advantages.dtype)
        if check and not bool((alpha >= 0) & (alpha <= 1)):
            raise ValueError(f"hysteresis must be in [0, 1] (the weight of negative-advantage updates); got {float(alpha)!r}.")
        return alpha
    setting, alpha_min = hysteresis_setting(name, hysteresis, alpha_min)
    if setting is None:
        return None
    if setting == "adaptive":
        return adaptive_alpha(advantages, alpha_min, mask=mask)
    return torch.tensor(setting, dtype=advantages.dtype, device=advantages.device)


def _broadcast_advantages(advantages: Tensor, shape: tuple[int, int], sequence_level: bool, name: str, mask: Tensor) -> Tensor:
    batch, _ = shape
    if advantages.dim() == 1 and advantages.shape[0] == batch:
        return advantages.unsqueeze(-1).expand(shape)
    if tuple(advantages.shape) == shape:
        if sequence_level:
            first = advantages.gather(-1, mask.argmax(-1, keepdim=True))  # (B, 1)
            if ((advantages - first).abs() * mask).amax() > 0:
                raise ValueError(
                    f"'{name}' is sequence-level and needs one advantage per completion, but the (B, T) "
                    "advantages vary within a completion; pass (B,) advantages or use 'gspo_token'."
                )
        return advantages
    raise ValueError(
        f"advantages must have shape (B,) = ({batch},) or (B, T) = {shape}; got {tuple(advantages.shape)}."
    )


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The validated inputs of one :func:`policy_loss` call, in the dtype the loss is computed in.

    Attributes:
        spec: the registry entry of the objective.
        logp: (B, T) log π_θ, 0 at padding; carries the gradient.
        log_ratio: (B, T) raw δ = logp − old_logp, 0 at padding (clamped later).
        advantages: (B, T), 0 at padding.
        mask: (B, T) float 0/1.
        counted: (B, T) bool, mask != 0.
        bound: the clamp of δ (and of the KL's log-ratio) for the input dtype.
    """

    spec: Any
    logp: Tensor
    log_ratio: Tensor
    advantages: Tensor
    mask: Tensor
    counted: Tensor
    bound: float


def _prepare(
    name: str,
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    check_inputs: bool,
    *,
    ref_logp: Tensor | None = None,
    is_weights: Tensor | None = None,
    entropy: Tensor | None = None,
) -> Prepared:
    """Validate every tensor input before any computation; return them prepared.

    float16 and bfloat16 inputs are computed in float32 (the gradient flows back in the input
    dtype), with δ clamped to a bound whose exponential fits that dtype's gradient."""
    spec = get_objective(name)
    _check_tensor("logp", logp)
    if logp.dim() != 2:
        raise ValueError(f"logp must be 2-D (B, T); got shape {tuple(logp.shape)}. Add a batch dimension.")
    if not logp.is_floating_point():
        raise ValueError(f"logp must be a floating-point tensor; got {logp.dtype}.")
    shape = tuple(logp.shape)
    _check_tensor("old_logp", old_logp, shape)
    _check_tensor("mask", mask, shape)
    _check_tensor("advantages", advantages)
    for label, value in (("ref_logp", ref_logp), ("is_weights", is_weights), ("entropy", entropy)):
        if value is not None:
            _check_tensor(label, value, shape)
    if check_inputs and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must contain only 0 and 1 (1 = counted completion token, 0 = padding or prompt).")
    counted = mask != 0
    if check_inputs:
        _check_finite("logp", logp.detach(), counted)
        _check_finite("old_logp", old_logp, counted)
        _check_finite("advantages", advantages, counted if advantages.dim() == 2 else None)
        for label, value in (("ref_logp", ref_logp), ("is_weights", is_weights), ("entropy", entropy)):
            if value is not None:
                _check_finite(label, value.detach(), counted)
        if spec.uses_logp:  # the objective reads log π_θ itself (DPPO: the probability π), not only the ratio
            for label, value in (("logp", logp.detach()), ("old_logp", old_logp)):
                if bool(((value > LOGP_TOLERANCE) & counted).any()):
                    raise ValueError(
                        f"{label} is above 0 at counted positions (largest {float(value[counted].max()):.4g}); "
                        f"'{spec.name}' reads log-probabilities themselves, which are <= 0: pass log_softmax of the "
                        "logits gathered at the sampled tokens, not logits or negated log-probabilities."
                    )
        if is_weights is not None and bool(((is_weights < 0) & counted).any()):
            raise ValueError("is_weights must be >= 0 (importance-sampling correction weights).")
    bound = log_ratio_bound(logp.dtype)
    dtype = torch.float32 if logp.dtype in (torch.float16, torch.bfloat16) else logp.dtype
    logp = logp.to(dtype)
    float_mask = mask.to(dtype)
    advantages = _broadcast_advantages(advantages.detach().to(dtype), shape, spec.level == "sequence", spec.name, float_mask)
    # Padding may hold anything (−inf from a masked log-softmax, NaN); zero it so that no NaN
    # reaches the loss or, through a 0·NaN product, the gradient.
    zero = torch.zeros((), dtype=dtype, device=logp.device)
    logp = torch.where(counted, logp, zero)
    log_ratio = torch.where(counted, logp - old_logp.detach().to(dtype), zero)
    advantages = torch.where(counted, advantages, zero)
    return Prepared(spec, logp, log_ratio, advantages, float_mask, counted, bound)


def policy_loss(
    name: str,
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    aggregation: str | None = None,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    hysteresis: Hysteresis = None,
    is_weights: Tensor | None = None,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    num_tokens: float | Tensor | None = None,
    num_seqs: float | Tensor | None = None,
    mean_length: float | Tensor | None = None,
    max_length: float | Tensor | None = None,
    alpha_min: float | None = None,
    check_inputs: bool = True,
    **hyperparameters: Any,
) -> LossOutput:
    r"""Compute the loss of a registered objective on one (micro-)batch.

    ::

        δ = clamp(logp − old_logp, −20, 20)
        ℓ = objective(δ, A)                       (per token, docs/objectives.md)
        ℓ ← w_is·ℓ                                (rollout importance-sampling correction)
        ℓ ← α·ℓ where A < 0                       (hysteresis)
        ℓ ← ℓ + beta·k(ref_logp, logp)            (KL, estimator k1/k2/k3)
        ℓ ← ℓ − entropy_coef·entropy
        loss = aggregate(ℓ, mask, aggregation)

    Args:
        name: a registered objective (``mhpo.list_objectives()``).
        logp: log π_θ of the sampled tokens, (B, T), carries the gradient.
        old_logp: log π_old of the same tokens, (B, T), from the rollout policy (no gradient).
            On-policy, pass ``logp.detach()``.
        advantages: (B,) per completion or (B, T) per token.
        mask: (B, T), 1 for counted completion tokens, 0 elsewhere (bool or 0/1 numbers).
        aggregation: reduction mode; None = the objective's default.
        ref_logp: log π_ref, (B, T), for the KL term.
        beta: KL coefficient (>= 0); beta > 0 needs ``ref_logp``.
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
        hysteresis: None, a fixed α in [0, 1] for completions with A < 0, ``"adaptive"``
            (A-HPO, α from *these* advantages), or ``"off"`` (none, whatever the default).
            None = the objective's default (0.6 for ``hpo``, ``"adaptive"`` for ``a_hpo``, off
            otherwise). With micro-batches, pass the rollout batch's α
            (``mhpo.prepare_rollout(...).hysteresis``) instead of ``"adaptive"``.
        is_weights: (B, T) non-negative per-token weights correcting for the rollout engine
            sampling from a slightly different distribution than π_old (TRL's vLLM
            ``importance_sampling_ratio``, verl's ``rollout_is_weights``); they multiply the
            policy term, not the KL term, and carry no gradient.
        entropy: per-token entropy of π_θ, (B, T), for the entropy bonus.
        entropy_coef: coefficient of the entropy bonus (ℓ ← ℓ − coef·H); needs ``entropy``.
        num_tokens, num_seqs, mean_length, max_length: global normalisers, see
            :func:`mhpo.aggregate`.
        alpha_min: lower bound of the adaptive α (default 0.1); only with ``"adaptive"``.
        check_inputs: check mask values, finiteness and, where the objective reads log π_θ
            itself, that log-probabilities are <= 0 (one device sync); turn off only in a
            hot loop whose inputs are already known to be good.
        **hyperparameters: the objective's hyperparameters (keyword-only), e.g. ``c=1.5``.

    Returns:
        :class:`LossOutput` with ``loss``, ``per_token`` and ``metrics``.

    Raises:
        ValueError: unknown objective or hyperparameter, out-of-range value, mismatched
            shapes, non-binary mask, NaN/inf inputs; the message names the fix.

    Example:
        >>> import torch, mhpo
        >>> logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        >>> out = mhpo.policy_loss("mhpo", logp, logp.detach() - 0.1, torch.tensor([1.0]),
        ...                        torch.tensor([[1, 1, 0]]))
        >>> out.loss.backward()
        >>> sorted(out.metrics)[:3]
        ['adv/neg_frac', 'adv/pos_frac', 'grad_weight/max']
    """
    prep = _prepare(name, logp, old_logp, advantages, mask, check_inputs,
                    ref_logp=ref_logp, is_weights=is_weights, entropy=entropy)  # fmt: skip
    spec, adv, float_mask, counted = prep.spec, prep.advantages, prep.mask, prep.counted
    cfg = spec.make_config(**hyperparameters)
    mode = spec.aggregation if aggregation is None else aggregation
    if mode not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation '{mode}'; use one of {', '.join(AGGREGATIONS)}.")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"Unknown kl_estimator '{kl_estimator}'; use one of {', '.join(KL_ESTIMATORS)}.")
    for label, value in (("beta", beta), ("entropy_coef", entropy_coef)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number; got {value!r}.")
    if beta < 0:
        raise ValueError(f"beta must be >= 0 (the KL coefficient); got {beta}.")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp, the reference model's log-probs (B, T); pass it or set beta=0.")
    if entropy_coef != 0 and entropy is None:
        raise ValueError("entropy_coef != 0 needs entropy, the per-token entropy (B, T); pass it or set entropy_coef=0.")
    alpha = _resolve_hysteresis(spec, hysteresis, adv, float_mask, alpha_min, check_inputs)
    zero = torch.zeros((), dtype=prep.logp.dtype, device=prep.logp.device)
    if prep.logp.numel() == 0:  # an empty batch (B = 0 or T = 0): nothing to learn from
        loss = (prep.logp.sum() * 0).to(prep.logp.dtype)
        return LossOutput(loss=loss, per_token=prep.logp.detach() * 0, metrics={})

    log_ratio, _ = clamp_log_ratio(prep.log_ratio, prep.bound)
    per_token, metrics = spec.loss(log_ratio, prep.logp, adv, float_mask, cfg)
    if is_weights is not None:
        is_weights = torch.where(counted, is_weights.detach().to(per_token.dtype), zero)
        per_token = per_token * torch.where(counted, is_weights, torch.ones((), dtype=per_token.dtype, device=per_token.device))
        metrics["is_weight/mean"] = masked_mean(is_weights, float_mask)
    if alpha is not None:
        per_token = torch.where(adv < 0, alpha * per_token, per_token)
        metrics["hpo/alpha"] = alpha

    if ref_logp is not None:
        ref = torch.where(counted, ref_logp.detach().to(per_token.dtype), zero)
        kl = kl_penalty(prep.logp, ref, kl_estimator, bound=prep.bound)
        if beta > 0:
            per_token = per_token + beta * kl
        metrics[f"kl/{kl_estimator}"] = masked_mean(kl.detach(), float_mask)
    if entropy is not None:
        entropy = torch.where(counted, entropy.to(per_token.dtype), zero)
        if entropy_coef != 0:
            per_token = per_token - entropy_coef * entropy
        metrics["entropy/mean"] = masked_mean(entropy.detach(), float_mask)

    per_token = torch.where(counted, per_token, zero)
    loss = aggregate(
        per_token,
        float_mask,
        mode,
        num_tokens=num_tokens,
        num_seqs=num_seqs,
        mean_length=mean_length,
        max_length=max_length,
    )
    with torch.no_grad():
        metrics.update(_common_metrics(spec, prep, log_ratio, cfg, alpha))
    return LossOutput(loss=loss, per_token=per_token, metrics={k: v.detach() for k, v in metrics.items()})


def _weight(spec, log_ratio: Tensor, adv: Tensor, mask: Tensor, cfg, logp: Tensor) -> Tensor:
    if spec.uses_logp:
        return spec.weight(log_ratio, adv, mask, cfg, logp=logp)
    return spec.weight(log_ratio, adv, mask, cfg)


def _common_metrics(spec, prep: Prepared, log_ratio, cfg, alpha) -> dict[str, Tensor]:
    """Metrics every objective defines: ratio statistics, drift, advantages, gradient weight."""
    adv, mask = prep.advantages, prep.mask
    log_ratio = log_ratio.detach()
    ratio = torch.exp(log_ratio)
    weight = _weight(spec, prep.log_ratio.detach(), adv, mask, cfg, prep.logp.detach())
    if alpha is not None:
        weight = torch.where(adv < 0, alpha * weight, weight)
    # Tokens with A = 0 receive no gradient whatever their weight; leave them out.
    signal = mask * (adv != 0)
    nan = torch.full((), math.nan, dtype=ratio.dtype, device=ratio.device)
    has_signal = signal.sum() > 0
    return {
        "ratio/mean": masked_mean(ratio, mask),
        "ratio/min": masked_min(ratio, mask),
        "ratio/max": masked_max(ratio, mask),
        "log_ratio/abs_mean": masked_mean(log_ratio.abs(), mask),
        # Tokens were sampled from π_old, so r − 1 − δ is the unbiased, non-negative k3
        # estimate of KL(π_old ‖ π_θ): how far the update has moved the policy.
        "kl/old_k3": masked_mean(ratio - 1 - log_ratio, mask),
        "adv/pos_frac": masked_fraction(adv > 0, mask),
        "adv/neg_frac": masked_fraction(adv < 0, mask),
        "grad_weight/mean": torch.where(has_signal, masked_mean(weight, signal), nan),
        "grad_weight/max": torch.where(has_signal, masked_max(weight, signal), nan),
    }


def gradient_weight(
    name: str,
    log_ratio: Tensor,
    advantages: Tensor,
    *,
    mask: Tensor | None = None,
    logp: Tensor | None = None,
    hysteresis: Hysteresis = None,
    alpha_min: float | None = None,
    **hyperparameters: Any,
) -> Tensor:
    r"""The analytic gradient weight w of an objective, (B, T).

    Every objective's per-token gradient has the form ∇ℓ = −A·w·∇logp; with ``token_sum``
    aggregation the gradient of the loss with respect to ``logp`` is exactly −A·w·mask
    (tested against autograd for every objective). For sequence-level objectives (``gspo``,
    ``gmpo``) w depends on the whole completion, so pass ``mask`` (default: all counted).

    Args:
        name: a registered objective.
        log_ratio: δ = logp − old_logp, (B, T) or any shape for token-level objectives
            (a 1-D sweep of ratios is treated as one token per completion).
        advantages: broadcastable to ``log_ratio`` (only its sign matters for most objectives).
        mask: (B, T) for sequence-level objectives; default all ones.
        logp: log π_θ, same shape as ``log_ratio``, for the objectives whose weight depends on
            the probability itself (``spec.uses_logp``: DPPO, Clip-Cov, KL-Cov); default
            π_old = 0.5 at every token (logp = log 0.5 + δ). Ignored by the others.
        hysteresis, alpha_min: as in :func:`policy_loss`; None = the objective's default.
        **hyperparameters: the objective's hyperparameters.

    Example:
        >>> import torch, mhpo
        >>> r = torch.tensor([0.5, 1.0, 2.0, 10.0], dtype=torch.float64)
        >>> mhpo.gradient_weight("mhpo", r.log(), torch.ones_like(r))
        tensor([0.0544, 0.2651, 0.3907, 0.0820], dtype=torch.float64)
    """
    spec = get_objective(name)
    cfg = spec.make_config(**hyperparameters)
    log_ratio = _check_tensor("log_ratio", log_ratio).detach()
    if not log_ratio.is_floating_point():
        raise ValueError(f"log_ratio must be a floating-point tensor; got {log_ratio.dtype}.")
    flat = log_ratio.dim() == 1
    if flat:  # a sweep of ratios: one token per completion
        log_ratio = log_ratio.unsqueeze(-1)
    advantages = torch.as_tensor(advantages, dtype=log_ratio.dtype, device=log_ratio.device)
    advantages = advantages.unsqueeze(-1) if flat and advantages.dim() == 1 else advantages
    advantages = advantages.expand_as(log_ratio)
    mask = torch.ones_like(log_ratio) if mask is None else _check_tensor("mask", mask, tuple(log_ratio.shape)).to(log_ratio.dtype)
    if logp is None:
        logp = math.log(0.5) + log_ratio
    else:
        logp = _check_tensor("logp", logp.unsqueeze(-1) if flat else logp, tuple(log_ratio.shape)).detach().to(log_ratio)
    weight = _weight(spec, log_ratio, advantages, mask, cfg, logp)
    alpha = _resolve_hysteresis(name, hysteresis, advantages, mask, alpha_min)
    if alpha is not None:
        weight = torch.where(advantages < 0, alpha * weight, weight)
    return weight.squeeze(-1) if flat else weight
