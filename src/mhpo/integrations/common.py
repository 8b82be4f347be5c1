"""What the TRL and verl adapters share: translating a framework's hyperparameter names and
conventions into an objective's, so the same numbers mean the same thing everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any

import mhpo

# verl's loss_agg_mode names -> ours. `mean_length` has no verl name: within one mini-batch
# whose global counts are known it equals token-mean (L̄ of that mini-batch).
VERL_AGGREGATIONS = {
    "token-mean": "token_mean",
    "token-sum": "token_sum",
    "seq-mean-token-mean": "seq_mean_token_mean",
    "seq-mean-token-sum": "seq_mean_token_sum",
    "seq-mean-token-sum-norm": "seq_mean_token_sum_norm",
}


def objective_fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(mhpo.get_objective(name).config)}


def merge_hyperparameters(name: str, explicit: dict[str, Any], translated: dict[str, Any], source: str) -> dict[str, Any]:
    """The objective's hyperparameters: explicit ones, plus those translated from the host
    framework's own fields where the objective has them. A field set both ways with
    different values is an error rather than a silent choice."""
    fields = objective_fields(name)
    merged = dict(explicit)
    for key, value in translated.items():
        if key not in fields:
            continue
        if key in explicit and explicit[key] != value:
            raise ValueError(
                f"'{key}' is set to {explicit[key]!r} in the objective hyperparameters and to {value!r} through "
                f"{source}; set it in one place."
            )
        merged[key] = value
    mhpo.get_objective(name).make_config(**merged)  # validate now, not at the first step
    return merged


def cispo_offset_from_cap(cap: float) -> float:
    """TRL's CISPO ``epsilon_high`` is the absolute weight cap; ours is an offset from 1."""
    if cap <= 1:
        raise ValueError(f"CISPO's weight cap (TRL epsilon_high) must be > 1; got {cap}.")
    return cap - 1.0
