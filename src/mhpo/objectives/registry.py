"""The flat objective registry: one dict, one decorator, one getter.

The registry is the single source of truth for the CLI's choices, the docs tables and the
parametrised tests. An entry binds a name to

* ``loss``: ``(log_ratio, logp, advantages, mask, cfg) -> (per_token, metrics)``, where
  ``log_ratio`` is δ = log π_θ − log π_old already clamped to [−20, 20], ``advantages`` is
  broadcast to (B, T) and ``mask`` is a float (B, T) tensor of 0/1;
* ``weight``: ``(log_ratio, advantages, mask, cfg) -> w`` (B, T), the analytic gradient
  weight of METHODS.md, taking the *unclamped* δ so that it can tell where the clamp
  stops the gradient;
* ``config``: a frozen dataclass holding the hyperparameters and their defaults;
* the defaults a trainer needs (aggregation, advantage scale, hysteresis).
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
class ObjectiveSpec:
    """Everything the library knows about one registered objective.

    Attributes:
        name: registry key, e.g. ``"mhpo"``.
        loss: per-token loss function (see module docstring).
        weight: analytic gradient-weight function (see module docstring).
        config: frozen dataclass of hyperparameters; ``config()`` gives the defaults.
        aggregation: default aggregation mode (METHODS.md table).
        advantage_scale: default ``scale`` of :func:`mhpo.group_advantages`.
        level: ``"token"`` or ``"sequence"``. A sequence-level objective needs one advantage
            per completion, and its gradient weight is that of the whole sequence.
        hysteresis: default hysteretic weighting (``None``, a float α or ``"adaptive"``).
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
ADVANTAGE_SCALES = ("group", "batch", "none")


def register_objective(
    name: str,
    *,
    config: type,
    weight: WeightFn,
    aggregation: str = "seq_mean_token_mean",
    advantage_scale: str = "group",
    level: str = "token",
    hysteresis: float | str | None = None,
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


def get_objective(name: str) -> ObjectiveSpec:
    """Return the spec registered under ``name``; the error lists every valid name."""
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
