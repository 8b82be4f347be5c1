"""CISPO: a REINFORCE update weighted by the clipped, detached importance ratio."""

from __future__ import annotations

import dataclasses

import torch

from ._common import Tensor, check_eps, clamp_log_ratio, masked_fraction
from .registry import register_objective


@dataclasses.dataclass(frozen=True)
class CISPOConfig:
    """Hyperparameters of CISPO; bounds are offsets from 1, as in verl.

    Attributes:
        eps_low: the weight is clipped below at 1 − eps_low; None (default) = no lower bound.
        eps_high: the weight is clipped above at 1 + eps_high (default 4.0, a cap of 5.0).
            TRL's ``epsilon_high`` for CISPO is the absolute cap, i.e. 1 + eps_high.
    """

    eps_low: float | None = None
    eps_high: float = 4.0

    def __post_init__(self) -> None:
        check_eps("CISPOConfig", self.eps_low, self.eps_high, allow_none_low=True)


def _clipped_ratio(log_ratio: Tensor, cfg: CISPOConfig) -> Tensor:
    low = None if cfg.eps_low is None else 1 - cfg.eps_low
    return torch.exp(clamp_log_ratio(log_ratio)[0]).clamp(min=low, max=1 + cfg.eps_high)


def cispo_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: CISPOConfig) -> Tensor:
    """w = clip(r, 1 − eps_low, 1 + eps_high); no clamp factor, the gradient flows via logp."""
    return _clipped_ratio(log_ratio, cfg)


@register_objective(
    "cispo",
    config=CISPOConfig,
    weight=cispo_weight,
    aggregation="token_mean",
    paper="https://arxiv.org/abs/2506.13585",
    summary="Clipped IS-weight policy optimisation (MiniMax-M1): every token keeps a gradient.",
)
def cispo_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: CISPOConfig):
    r"""Clipped Importance Sampling Policy Optimization (MiniMax-M1).

    Equation (docs/objectives.md#cispo-cispo)::

        ℓ = −sg[clip(r, 1 − eps_low, 1 + eps_high)]·A·logp

    Unlike PPO clipping, no token loses its gradient: the clip bounds the weight only.

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: log π_θ of the sampled tokens, (B, T); the gradient flows through it.
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`CISPOConfig`.

    Returns:
        per-token loss (B, T) and metrics ``clip/high_frac`` (r > 1 + eps_high) and, when
        eps_low is set, ``clip/low_frac`` (r < 1 − eps_low).

    Example:
        >>> import math, torch, mhpo
        >>> logp = torch.tensor([[math.log(0.5), math.log(8.0)]], dtype=torch.float64)
        >>> out = mhpo.policy_loss("cispo", logp, torch.zeros_like(logp),
        ...                        torch.tensor([1.0], dtype=torch.float64), torch.ones_like(logp))
        >>> out.per_token   # −0.5·1·ln 0.5 = 0.3466, −5·1·ln 8 = −10.3972 (weight capped at 5)
        tensor([[  0.3466, -10.3972]], dtype=torch.float64)

    Deviations and assumptions:
        1. The clip fractions count capped tokens whatever the sign of A, since the cap acts
           on the weight of every token (unlike PPO's sign-dependent clip).
        2. The loss value is −w·A·logp, which depends on logp itself, not only on r; only its
           gradient is meaningful.
    """
    with torch.no_grad():
        weight = _clipped_ratio(log_ratio, cfg)
        ratio = torch.exp(log_ratio)
        metrics = {"clip/high_frac": masked_fraction(ratio > 1 + cfg.eps_high, mask)}
        if cfg.eps_low is not None:
            metrics["clip/low_frac"] = masked_fraction(ratio < 1 - cfg.eps_low, mask)
    return -weight * advantages * logp, metrics
