"""VESPO: a smooth, sequence-level gamma weight on the REINFORCE gradient."""

from __future__ import annotations

import dataclasses
import math

import torch

from ._common import Tensor, check, clamp_log_ratio
from .registry import register_objective

LOG_W_MIN = math.log(1e-8)


@dataclasses.dataclass(frozen=True)
class VESPOConfig:
    """Shape of VESPO's weight φ(W) = W^k·e^{λ(1 − W)}, one (k, λ) per sign of A.

    Attributes:
        k_pos, lambda_pos: for A >= 0 (2.0, 3.0).
        k_neg, lambda_neg: for A < 0 (3.0, 2.0).
        The defaults are TRL's (``vespo_k_pos`` ...). φ(1) = 1 and φ peaks at W = k/λ.
    """

    k_pos: float = 2.0
    lambda_pos: float = 3.0
    k_neg: float = 3.0
    lambda_neg: float = 2.0

    def __post_init__(self) -> None:
        for label in ("k_pos", "lambda_pos", "k_neg", "lambda_neg"):
            value = getattr(self, label)
            check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf,
                  f"VESPOConfig: {label} must be a finite number >= 0; got {value!r}.")  # fmt: skip


def sequence_log_weight(log_ratio: Tensor, mask: Tensor) -> Tensor:
    """log W_i = clamp(Σ_t m δ_{i,t}, log 1e-8, 20), (B, 1): the whole sequence's ratio."""
    clamped, _ = clamp_log_ratio(log_ratio.detach())
    return (clamped * mask).sum(-1, keepdim=True).clamp(LOG_W_MIN, 20.0)


def vespo_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: VESPOConfig) -> Tensor:
    """w = φ(W_i) = exp(λ + k·log W − λ·W), (k, λ) by the sign of A (A = 0 counts as positive)."""
    log_w = sequence_log_weight(log_ratio, mask).expand_as(log_ratio)
    positive = advantages >= 0
    k = torch.where(positive, cfg.k_pos, cfg.k_neg).to(log_w)
    lam = torch.where(positive, cfg.lambda_pos, cfg.lambda_neg).to(log_w).clamp(min=1e-4)
    return torch.exp(lam + k * log_w - lam * torch.exp(log_w))


@register_objective(
    "vespo",
    config=VESPOConfig,
    weight=vespo_weight,
    aggregation="token_mean",
    level="sequence",
    paper="https://arxiv.org/abs/2602.10693",
    summary="Smooth gamma weight W^k·e^{λ(1−W)} of the sequence ratio on −A·logp; no hard clip.",
)
def vespo_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: VESPOConfig):
    r"""VESPO (arXiv 2602.10693), as TRL 1.16 ships it.

    Equation (docs/objectives.md#vespo-vespo)::

        log W_i = clamp(Σ_t m δ_{i,t}, log 1e-8, 20)        (the sequence's ratio)
        φ_i = exp(λ + k·log W_i − λ·W_i) = W_i^k·e^{λ(1 − W_i)}
        ℓ = −sg[φ_i]·A·logp,   (k, λ) = (k_pos, λ_pos) if A >= 0 else (k_neg, λ_neg)

    φ is 1 on-policy and falls smoothly to 0 as the sequence ratio leaves 1 either way, so
    far off-policy sequences fade instead of being cut.

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: log π_θ, (B, T); the gradient flows through it.
        advantages: one advantage per completion, broadcast to (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`VESPOConfig`.

    Returns:
        per-token loss (B, T) and metric ``vespo/phi_mean`` (mean φ over counted tokens).

    Example:
        >>> import math, torch, mhpo
        >>> logp = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
        >>> old = torch.tensor([[-1.0 - math.log(2.0), -1.0]], dtype=torch.float64)   # W = 2
        >>> mhpo.policy_loss("vespo", logp, old, torch.tensor([1.0], dtype=torch.float64),
        ...                  torch.ones_like(logp), aggregation="token_sum").per_token   # −φ·A·logp, φ = 4e^−3
        tensor([[0.1991, 0.1991]], dtype=torch.float64)

    Deviations and assumptions:
        1. TRL multiplies vLLM's token-level importance-sampling ratio into W; here that
           correction is ``is_weights``, which multiplies the loss instead.
        2. A = 0 takes the positive (k, λ), as in TRL; its gradient is 0 either way.
    """
    with torch.no_grad():
        weight = vespo_weight(log_ratio, advantages, mask, cfg)
        metrics = {"vespo/phi_mean": (weight * mask).sum() / mask.sum().clamp(min=1)}
    return -weight * advantages * logp, metrics
