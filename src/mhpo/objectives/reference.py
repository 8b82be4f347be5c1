"""Reference points for studies: plain REINFORCE and the unclipped importance-weighted loss."""

from __future__ import annotations

import dataclasses

import torch

from ._common import Tensor, clamp_log_ratio
from .registry import register_objective


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """These objectives have no hyperparameters."""


def _unit_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: NoConfig) -> Tensor:
    return torch.ones_like(log_ratio)


def _ratio_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: NoConfig) -> Tensor:
    clamped, inside = clamp_log_ratio(log_ratio)
    return torch.exp(clamped) * inside


@register_objective(
    "reinforce",
    config=NoConfig,
    weight=_unit_weight,
    paper="https://doi.org/10.1007/BF00992696",
    summary="Reference: ℓ = −A·logp, w = 1 (ignores the importance ratio).",
)
def reinforce_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: NoConfig):
    r"""REINFORCE with group-relative advantages, a reference point for studies.

    Equation (docs/objectives.md#reference-points-reinforce-unclipped)::

        ℓ = −A·logp,  w = 1

    Args:
        log_ratio: unused, (B, T).
        logp: log π_θ, (B, T).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`NoConfig`.

    Returns:
        per-token loss (B, T) and no objective-specific metrics.

    Example:
        >>> import torch, mhpo
        >>> logp = torch.tensor([[-2.0]], dtype=torch.float64)
        >>> mhpo.policy_loss("reinforce", logp, logp, torch.tensor([0.5], dtype=torch.float64),
        ...                  torch.ones_like(logp)).per_token   # −0.5·(−2)
        tensor([[1.]], dtype=torch.float64)

    Deviations and assumptions:
        1. Off-policy samples are not corrected (that is what makes it a reference point).
    """
    return -advantages * logp, {}


@register_objective(
    "unclipped",
    config=NoConfig,
    weight=_ratio_weight,
    summary="Reference: ℓ = −r·A, w = r, unbounded (what clipping protects against).",
)
def unclipped_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: NoConfig):
    r"""The unclipped importance-weighted surrogate, a reference point for studies.

    Equation (docs/objectives.md#reference-points-reinforce-unclipped)::

        ℓ = −r·A,  w = r (unbounded)

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: unused, (B, T).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`NoConfig`.

    Returns:
        per-token loss (B, T) and no objective-specific metrics.

    Example:
        >>> import math, torch, mhpo
        >>> logp = torch.tensor([[math.log(3.0)]], dtype=torch.float64)
        >>> mhpo.policy_loss("unclipped", logp, torch.zeros_like(logp),
        ...                  torch.tensor([-1.0], dtype=torch.float64), torch.ones_like(logp)).per_token
        tensor([[3.0000]], dtype=torch.float64)

    Deviations and assumptions:
        1. The only safeguard is the shared clamp of δ to [−20, 20].
    """
    return -torch.exp(log_ratio) * advantages, {}
