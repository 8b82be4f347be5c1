"""What the TRL and verl adapters share: translating a framework's hyperparameter names and
conventions into an objective's, so the same numbers mean the same thing everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

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


def grouped_advantages(
    name: str,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index,
    *,
    host: str,
    advantage_scale: str | None = None,
    hysteresis: Any = None,
    alpha_min: float | None = None,
) -> torch.Tensor:
    """A host's rollout batch (rows in any order, grouped by ``index``) -> the objective's
    advantages (B, T) with α folded into the negative ones, for the ``mhpo_<name>``
    estimators of verl and SkyRL.

    Every group must have the same size G. The rewards are summed over tokens and
    :func:`mhpo.prepare_rollout` gives the advantages at the objective's scale and the batch's
    α; folding α is exact only for an objective with ``spec.homogeneous``, and an α for any
    other raises ValueError."""
    if index is None:
        raise ValueError(f"the mhpo_{name} advantage estimator needs {host}'s uid index to group completions by prompt.")
    groups: dict[Any, list[int]] = {}
    for row, uid in enumerate(index):
        groups.setdefault(uid, []).append(row)
    sizes = sorted({len(rows) for rows in groups.values()})
    if len(sizes) != 1:
        raise ValueError(f"the mhpo_{name} advantage estimator needs groups of one size; got sizes {sizes}.")
    order = torch.tensor([row for rows in groups.values() for row in rows], device=token_level_rewards.device)
    rewards = token_level_rewards.sum(-1)
    batch = mhpo.prepare_rollout(name, rewards[order], response_mask[order], group_size=sizes[0],
                                 advantage_scale=advantage_scale, hysteresis=hysteresis, alpha_min=alpha_min)  # fmt: skip
    if batch.hysteresis is not None and not mhpo.get_objective(name).homogeneous:
        raise ValueError(
            f"'{name}' is not positively homogeneous in A, so its α cannot be folded into the advantages "
            f"(the mhpo_<name> estimator's way of applying it in {host}); run it without hysteresis."
        )
    advantages = batch.folded_advantages()
    out = torch.empty_like(advantages)
    out[order] = advantages
    return out.unsqueeze(-1) * response_mask
