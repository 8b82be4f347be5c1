"""M2PO: mask the fewest extreme tokens that keep the second moment of log r under a budget."""

from __future__ import annotations

import dataclasses
import math

import torch

from ._common import Tensor, check, clamp_log_ratio, masked_fraction, masked_mean
from .registry import register_objective


@dataclasses.dataclass(frozen=True)
class M2POConfig:
    """Hyperparameter of M2PO.

    Attributes:
        m2_threshold: τ, the budget of the mean of δ² over the kept tokens (0.04, the paper's).
    """

    m2_threshold: float = 0.04

    def __post_init__(self) -> None:
        check(isinstance(self.m2_threshold, (int, float)) and not isinstance(self.m2_threshold, bool)
              and 0 <= self.m2_threshold < math.inf,
              f"M2POConfig: m2_threshold must be a finite number >= 0; got {self.m2_threshold!r}.")  # fmt: skip


def m2_kept(log_ratio: Tensor, mask: Tensor, cfg: M2POConfig) -> Tensor:
    """Bool (B, T): the counted tokens M2PO keeps. The tokens of largest δ² are dropped, the
    fewest such that the mean δ² of those left is at most τ."""
    sq = torch.where(mask > 0, log_ratio.detach().square(), torch.zeros_like(log_ratio)).flatten()
    counted = int((mask > 0).sum())
    kept = mask.flatten() > 0
    if counted == 0 or float(sq.sum()) <= cfg.m2_threshold * counted:
        return kept.view_as(mask)
    order = torch.argsort(torch.where(kept, sq, torch.full_like(sq, -1.0)), descending=True)[:counted]
    values = sq[order]
    remaining = values.flip(0).cumsum(0).flip(0)  # sum of values[k:]
    means = remaining / torch.arange(counted, 0, -1, dtype=sq.dtype, device=sq.device)
    fits = torch.nonzero(means <= cfg.m2_threshold)
    drop = int(fits[0]) if fits.numel() else counted
    kept[order[:drop]] = False
    return kept.view_as(mask)


def m2po_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: M2POConfig) -> Tensor:
    """w = r at kept tokens (|δ| <= 20), 0 at masked ones."""
    clamped, inside = clamp_log_ratio(log_ratio)
    return torch.exp(clamped) * inside * m2_kept(clamped, mask, cfg)


@register_objective(
    "m2po",
    config=M2POConfig,
    weight=m2po_weight,
    aggregation="token_mean",
    selection="the tokens of largest δ² among those of one loss call",
    paper="https://arxiv.org/abs/2510.01161",
    summary="Second-moment trust region: drops the fewest extreme tokens so that mean δ² <= τ; no clip.",
)
def m2po_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: M2POConfig):
    r"""Second-Moment Trust Policy Optimization (Zheng et al., 2025).

    Equation (docs/objectives.md#m2po-m2po)::

        M̂2 = mean_t δ_t²  over counted tokens
        M_t = 0 for the k tokens of largest δ², k the smallest with mean_{kept} δ² <= τ
        ℓ = −M·r·A

    Only the extreme outliers are dropped; every other token keeps the unclipped surrogate's
    gradient, however stale the data.

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: unused, (B, T).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`M2POConfig`.

    Returns:
        per-token loss (B, T) and metrics ``m2po/m2`` (M̂2 before masking) and
        ``m2po/masked_frac`` (the share of counted tokens dropped).

    Example:
        >>> import torch, mhpo
        >>> logp = torch.tensor([[0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
        >>> old = torch.tensor([[-0.1, 0.1, -0.1, -1.0]], dtype=torch.float64)   # M̂2 = 0.2575
        >>> out = mhpo.policy_loss("m2po", logp, old, torch.tensor([1.0], dtype=torch.float64),
        ...                        torch.ones_like(logp), aggregation="token_sum")
        >>> out.metrics["m2po/masked_frac"], out.per_token   # dropping δ = 1 leaves 0.01 <= 0.04
        (tensor(0.2500, dtype=torch.float64), tensor([[-1.1052, -0.9048, -1.1052, -0.0000]], dtype=torch.float64))

    Deviations and assumptions:
        1. The paper's δ is against the behaviour policy that sampled the tokens; here it is
           against ``old_logp``, the same policy unless the host passes another.
        2. The mask is decided over the tokens of one call; hosts call the loss per
           micro-batch (AReaL per mini-batch), so micro-batch size changes which tokens go.
    """
    kept = m2_kept(log_ratio, mask, cfg)
    with torch.no_grad():
        metrics = {
            "m2po/m2": masked_mean(log_ratio.detach().square(), mask),
            "m2po/masked_frac": masked_fraction(~kept & (mask > 0), mask),
        }
    return -torch.exp(log_ratio) * advantages * kept, metrics
