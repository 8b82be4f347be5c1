"""GMPO: the geometric mean of token ratios, clipped per token in log space."""

from __future__ import annotations

import dataclasses
import math

import torch

from ._common import Tensor, check, clamp_log_ratio, masked_fraction, sequence_mean
from .gspo import _sequence_metrics
from .registry import register_objective


@dataclasses.dataclass(frozen=True)
class GMPOConfig:
    """Hyperparameters of GMPO; the clip range is in log space.

    Attributes:
        eps_low: δ is clipped below at −eps_low for A < 0 (default 0.4, ratio e^−0.4 ≈ 0.67).
        eps_high: δ is clipped above at eps_high for A > 0 (default 0.4, ratio e^0.4 ≈ 1.49).
    """

    eps_low: float = 0.4
    eps_high: float = 0.4

    def __post_init__(self) -> None:
        for name in ("eps_low", "eps_high"):
            value = getattr(self, name)
            check(
                isinstance(value, (int, float)) and 0 <= value < math.inf,
                f"GMPOConfig: {name} is a log-space clip offset and must be a finite number >= 0; got {value!r}.",
            )


def _active(log_ratio: Tensor, advantages: Tensor, cfg: GMPOConfig) -> Tensor:
    """Where δ̃ = δ (the unclipped side of the sign-dependent min/max)."""
    return torch.where(advantages >= 0, log_ratio <= cfg.eps_high, log_ratio >= -cfg.eps_low)


def gmpo_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: GMPOConfig) -> Tensor:
    """w_t = g_i·1[δ̃_t = δ_t]·1[|δ_t| ≤ 20]."""
    clamped, inside = clamp_log_ratio(log_ratio)
    active = _active(clamped, advantages, cfg)
    clipped = torch.where(active, clamped, clamped.clamp(-cfg.eps_low, cfg.eps_high))
    geometric = torch.exp(sequence_mean(clipped, mask))  # (B, 1)
    return geometric * (active & inside)


@register_objective(
    "gmpo",
    config=GMPOConfig,
    weight=gmpo_weight,
    aggregation="seq_mean_token_mean",
    level="sequence",
    paper="https://arxiv.org/abs/2507.20673",
    summary="Geometric-Mean Policy Optimization: exp(mean of log-space-clipped δ) per completion.",
)
def gmpo_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: GMPOConfig):
    r"""Geometric-Mean Policy Optimization.

    Equation (docs/objectives.md#gmpo-gmpo)::

        δ̃ = min(δ, clip(δ, −eps_low, eps_high))   if A_i > 0
        δ̃ = max(δ, clip(δ, −eps_low, eps_high))   if A_i < 0
        g_i = exp( Σ_t m δ̃ / Σ_t m ),   ℓ_i = −g_i·A_i broadcast over the tokens of i

    The geometric mean is less sensitive than the arithmetic one to a single outlier token.

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: unused, (B, T).
        advantages: one advantage per completion, broadcast to (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`GMPOConfig`.

    Returns:
        per-token loss (B, T) and metrics ``clip/low_frac`` (δ < −eps_low with A < 0),
        ``clip/high_frac`` (δ > eps_high with A > 0) and ``seq_ratio/mean|min|max`` (of g).

    Example:
        >>> import torch, mhpo
        >>> logp = torch.tensor([[0.2, 1.0]], dtype=torch.float64)   # δ̃ = (0.2, 0.4)
        >>> out = mhpo.policy_loss("gmpo", logp, torch.zeros_like(logp),
        ...                        torch.tensor([1.0], dtype=torch.float64), torch.ones_like(logp))
        >>> out.per_token   # −exp(0.3) = −1.3499
        tensor([[-1.3499, -1.3499]], dtype=torch.float64)

    Deviations and assumptions:
        1. Advantages must be constant over a completion (checked).
        2. Tokens with A = 0 use the A > 0 branch; their loss is 0 either way.
    """
    active = _active(log_ratio, advantages, cfg)
    clipped = torch.where(active, log_ratio, log_ratio.clamp(-cfg.eps_low, cfg.eps_high))
    seq_log_ratio = sequence_mean(clipped, mask)  # (B, 1)
    loss = -torch.exp(seq_log_ratio) * advantages
    with torch.no_grad():
        metrics = {
            "clip/low_frac": masked_fraction((log_ratio < -cfg.eps_low) & (advantages < 0), mask),
            "clip/high_frac": masked_fraction((log_ratio > cfg.eps_high) & (advantages > 0), mask),
        }
        metrics.update(_sequence_metrics(seq_log_ratio, mask))
    return loss, metrics
