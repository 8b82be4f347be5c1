"""The flat objective registry: one dict, one decorator, one getter.

The registry is the single source of truth for the CLI's choices, the docs tables and the
parametrised tests. An entry binds a name to

* ``loss``: ``(log_ratio, logp, advantages, mask, cfg) -> (per_token, metrics)``, where
  ``log_ratio`` is δ = log π_θ − log π_old already clamped to [−20, 20], ``advantages`` is
  broadcast to (B, T) and ``mask`` is a float (B, T) tensor of 0/1;
* ``weight``: ``(log_ratio, advantages, mask, cfg) -> w`` (B, T), the analytic gradient
  weight of docs/objectives.md, taking the *unclamped* δ so that it can tell where the clamp
  stops the gradient;
* ``config``: a frozen dataclass holding the hyperparameters and their defaults;
* the rest of the objective's recipe, which lives outside the per-token loss: aggregation,
  advantage scale, hysteresis (none, a fixed α, or adaptive with its α_min) and the rollout
  rules (dynamic sampling, overlong filter, soft overlong punishment). Every host (the CPU
  trainer, TRL, verl) reads the recipe from here.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

import torch

Tensor = torch.Tensor
LossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]
WeightFn = Callable[..., Tensor]


@dataclasses.dataclass(frozen=True)
class RolloutRules:
    """How an objective's rollout batch is sampled and shaped before the loss (DAPO's rules).

    Attributes:
        dynamic_sampling: drop groups whose rewards are all equal and sample more prompts.
        overlong_filter: give completions that hit the token budget no gradient (mask them).
        overlong_buffer_fraction: soft overlong punishment: the last fraction of the token
            budget over which the reward falls linearly to −1 (0 = off).
    """

    dynamic_sampling: bool = False
    overlong_filter: bool = False
    overlong_buffer_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.overlong_buffer_fraction < 1:
            raise ValueError(f"overlong_buffer_fraction must be in [0, 1); got {self.overlong_buffer_fraction!r}.")

    def overlong_buffer(self, max_length: int) -> int:
        """The punishment buffer in tokens for a budget of ``max_length`` tokens."""
        return int(round(self.overlong_buffer_fraction * max_length))


NO_ROLLOUT_RULES = RolloutRules()
DEFAULT_ALPHA_MIN = 0.1
# Keywords of mhpo.policy_loss: a hyperparameter of the same name would be taken by policy_loss
# (a future objective's `beta` would silently become the KL coefficient), so registration
# refuses them. A test checks this list against policy_loss's signature.
RESERVED_NAMES = frozenset({
    "name", "logp", "old_logp", "advantages", "mask", "aggregation", "ref_logp", "beta", "kl_estimator",
    "hysteresis", "is_weights", "entropy", "entropy_coef", "num_tokens", "num_seqs", "mean_length",
    "max_length", "alpha_min", "check_inputs",
})  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """Everything the library knows about one registered objective.

    Attributes:
        name: registry key, e.g. ``"mhpo"``.
        loss: per-token loss function (see module docstring).
        weight: analytic gradient-weight function (see module docstring).
        config: frozen dataclass of hyperparameters; ``config()`` gives the defaults.
        aggregation: default aggregation mode (docs/objectives.md#aggregation).
        advantage_scale: default ``scale`` of :func:`mhpo.group_advantages`.
        level: ``"token"`` or ``"sequence"``. A sequence-level objective needs one advantage
            per completion, and its gradient weight is that of the whole sequence.
        hysteresis: default hysteretic weighting (``None``, a float α or ``"adaptive"``).
        alpha_min: lower bound of the adaptive α (A-HPO); None unless ``hysteresis`` is adaptive.
        rollout: the rollout rules (dynamic sampling, overlong filter and punishment).
        homogeneous: the loss is positively homogeneous of degree 1 in A and branches only on
            A's sign, so that α multiplied into the negative advantages equals hysteresis α
            (what verl's estimator relies on). False for DRO (a penalty that does not scale
            with A) and the covariance selections of Clip-Cov and KL-Cov.
        selection: None, or what the objective selects across the tokens of one loss call
            (Clip-Cov's and KL-Cov's covariance selection, M2PO's second-moment mask). Such
            a selection depends on which tokens share the call, so splitting a batch into
            micro-batches changes it; the docs say how each host calls it.
        uses_logp: the gradient weight depends on log π_θ itself, not only on the ratio (DPPO's
            probability-difference trust region, the covariance selections): its weight
            function takes ``logp=`` as a keyword.
        paper: link to the source.
        summary: one line for tables and ``--help``.
    """

    name: str
    loss: LossFn
    weight: WeightFn
    config: type
    aggregation: str
    advantage_scale: str
    level: str
    hysteresis: float | str | None
    paper: str
    summary: str
    alpha_min: float | None = None
    rollout: RolloutRules = NO_ROLLOUT_RULES
    homogeneous: bool = True
    selection: str | None = None
    uses_logp: bool = False

    def make_config(self, **hyperparameters: Any) -> Any:
        """Build and validate this objective's config, rejecting unknown names clearly."""
        valid = [f.name for f in dataclasses.fields(self.config)]
        for key in hyperparameters:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(
                    f"Objective '{self.name}' has no hyperparameter '{key}'.{hint} "
                    f"Valid hyperparameters: {', '.join(valid) or '(none)'}."
                )
        return self.config(**hyperparameters)


OBJECTIVES: dict[str, ObjectiveSpec] = {}

AGGREGATIONS = (
    "token_mean",
    "seq_mean_token_mean",
    "seq_mean_token_sum",
    "seq_mean_token_sum_norm",
    "token_sum",
    "mean_length",
)
ADVANTAGE_SCALES = ("group", "batch", "none", "valid")


def register_objective(
    name: str,
    *,
    config: type,
    weight: WeightFn,
    aggregation: str = "seq_mean_token_mean",
    advantage_scale: str = "group",
    level: str = "token",
    hysteresis: float | str | None = None,
    alpha_min: float | None = None,
    rollout: RolloutRules = NO_ROLLOUT_RULES,
    homogeneous: bool = True,
    selection: str | None = None,
    uses_logp: bool = False,
    paper: str = "",
    summary: str = "",
) -> Callable[[LossFn], LossFn]:
    """Decorator registering a loss function under ``name``.

    The same function may be registered under several names (``dapo`` is ``grpo`` with other
    defaults). Registering a *different* function under a taken name raises ``ValueError``.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation '{aggregation}'; use one of {AGGREGATIONS}.")
    if advantage_scale not in ADVANTAGE_SCALES:
        raise ValueError(f"Unknown advantage scale '{advantage_scale}'; use one of {ADVANTAGE_SCALES}.")
    if level not in ("token", "sequence"):
        raise ValueError(f"level must be 'token' or 'sequence', got '{level}'.")
    if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):
        raise ValueError(f"config of '{name}' must be a frozen dataclass.")
    clashes = sorted(RESERVED_NAMES & {f.name for f in dataclasses.fields(config)})
    if clashes:
        raise ValueError(
            f"hyperparameter(s) {', '.join(clashes)} of '{name}' clash with keywords of mhpo.policy_loss, which would "
            "take them instead; rename them (e.g. 'beta' -> 'kl_beta')."
        )
    if hysteresis is not None and hysteresis != "adaptive" and not (
        isinstance(hysteresis, (int, float)) and not isinstance(hysteresis, bool) and 0 <= hysteresis <= 1
    ):
        raise ValueError(f"hysteresis of '{name}' must be None, a number in [0, 1] or 'adaptive'; got {hysteresis!r}.")
    if hysteresis == "adaptive":
        alpha_min = DEFAULT_ALPHA_MIN if alpha_min is None else alpha_min
        if not 0 <= alpha_min <= 1:
            raise ValueError(f"alpha_min of '{name}' must be in [0, 1]; got {alpha_min!r}.")
    elif alpha_min is not None:
        raise ValueError(f"alpha_min of '{name}' only applies with hysteresis='adaptive'.")

    def decorator(fn: LossFn) -> LossFn:
        spec = ObjectiveSpec(
            name=name,
            loss=fn,
            weight=weight,
            config=config,
            aggregation=aggregation,
            advantage_scale=advantage_scale,
            level=level,
            hysteresis=hysteresis,
            paper=paper,
            summary=summary,
            alpha_min=alpha_min,
            rollout=rollout,
            homogeneous=homogeneous,
            selection=selection,
            uses_logp=uses_logp,
        )
        existing = OBJECTIVES.get(name)
        if existing is not None and existing != spec:
            raise ValueError(
                f"An objective named '{name}' is already registered ({existing.loss.__qualname__}); "
                "choose another name."
            )
        OBJECTIVES[name] = spec
        return fn

    return decorator


def get_objective(name: str | ObjectiveSpec) -> ObjectiveSpec:
    """Return the spec registered under ``name``; the error lists every valid name. A spec
    given in place of a name is returned as it is, so that a caller that calls the library
    many times per step (a trainer's micro-batches) resolves the name once."""
    if isinstance(name, ObjectiveSpec):
        return name
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(OBJECTIVES), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"Unknown objective '{name}'.{hint} Registered objectives: {', '.join(sorted(OBJECTIVES))}."
        ) from None


def list_objectives() -> list[str]:
    """Sorted names of every registered objective."""
    return sorted(OBJECTIVES)
