"""SAPO: a smooth, temperature-controlled sigmoid gate instead of a hard clip."""

from __future__ import annotations

import dataclasses
import math

import torch

from ._common import Tensor, check, clamp_log_ratio, masked_mean
from .registry import register_objective


@dataclasses.dataclass(frozen=True)
class SAPOConfig:
    """Hyperparameters of SAPO.

    Attributes:
        tau_pos: gate temperature for tokens with A > 0. Larger = sharper gate. > 0.
        tau_neg: gate temperature for tokens with A <= 0; slightly larger than tau_pos by
            default, so negative updates decay faster off-policy. > 0.
    """

    tau_pos: float = 1.0
    tau_neg: float = 1.05

    def __post_init__(self) -> None:
        for name in ("tau_pos", "tau_neg"):
            value = getattr(self, name)
            check(
                isinstance(value, (int, float)) and 0 < value < math.inf,
                f"SAPOConfig: {name} must be a finite number > 0 (the gate temperature); got {value!r}.",
            )


def _temperature(advantages: Tensor, cfg: SAPOConfig) -> Tensor:
    # Build the temperatures in the advantages' dtype: a Python-scalar torch.where would round
    # 1.05 to float32 before the cast.
    pos = torch.tensor(cfg.tau_pos, dtype=advantages.dtype, device=advantages.device)
    neg = torch.tensor(cfg.tau_neg, dtype=advantages.dtype, device=advantages.device)
    return torch.where(advantages > 0, pos, neg)


def _gate(ratio: Tensor, tau: Tensor) -> Tensor:
    """sech²(τ(r − 1)/2) = 1 − tanh²(τ(r − 1)/2), the soft gate; exactly 1 at r = 1."""
    return 1 - torch.tanh(tau * (ratio - 1) / 2).square()


def sapo_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: SAPOConfig) -> Tensor:
    """w = r·sech²(τ(r − 1)/2)."""
    log_ratio, inside = clamp_log_ratio(log_ratio)
    ratio = torch.exp(log_ratio)
    return ratio * _gate(ratio, _temperature(advantages, cfg)) * inside


@register_objective(
    "sapo",
    config=SAPOConfig,
    weight=sapo_weight,
    aggregation="seq_mean_token_mean",
    paper="https://arxiv.org/abs/2511.20347",
    summary="Soft Adaptive Policy Optimization: sigmoid gate with separate temperatures for A>0 and A<0.",
)
def sapo_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: SAPOConfig):
    r"""Soft Adaptive Policy Optimization.

    Equation (docs/objectives.md#sapo-sapo)::

        r = exp(log_ratio),  τ = tau_pos if A > 0 else tau_neg
        ℓ = −(4/τ)·σ(τ·(r − 1))·A

    Its gradient weight is w = r·sech²(τ(r − 1)/2): 1 at r = 1 (on-policy it is the plain
    policy gradient) and smoothly decaying as r leaves 1, where a hard clip would cut to 0.

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: unused, (B, T).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`SAPOConfig`.

    Returns:
        per-token loss (B, T) and metric ``sapo/gate_mean``, the mean of sech²(τ(r − 1)/2).

    Example:
        >>> import torch, mhpo
        >>> logp = torch.zeros(1, 1, dtype=torch.float64)   # r = 1: σ(0) = 1/2
        >>> mhpo.policy_loss("sapo", logp, logp, torch.tensor([1.0], dtype=torch.float64),
        ...                  torch.ones_like(logp)).per_token   # −(4/1)·(1/2)·1
        tensor([[-2.]], dtype=torch.float64)

    Deviations and assumptions:
        1. Tokens with A = 0 use tau_neg; their loss is 0 either way.
        2. The loss carries the constant offset −2A/τ at r = 1 (the published form); only its
           gradient matters for training.
    """
    ratio = torch.exp(log_ratio)
    tau = _temperature(advantages, cfg)
    loss = -(4 / tau) * torch.sigmoid(tau * (ratio - 1)) * advantages
    with torch.no_grad():
        metrics = {"sapo/gate_mean": masked_mean(_gate(ratio, tau), mask)}
    return loss, metrics
