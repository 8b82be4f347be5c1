"""GSPO and GSPO-token: the clipped surrogate on the length-normalised sequence ratio."""

from __future__ import annotations

import dataclasses

import torch

from ._common import Tensor, clamp_log_ratio, masked_max, masked_min, sequence_mean
from .clip import ClipConfig, clipped_loss, clipped_weight
from .registry import register_objective

GSPO_PAPER = "https://arxiv.org/abs/2507.18071"


@dataclasses.dataclass(frozen=True)
class GSPOConfig(ClipConfig):
    """GSPO's clip range, applied to the sequence ratio: ε_low = 3e-4, ε_high = 4e-4.

    The sequence ratio of a long completion moves far less than a token ratio, hence the
    range is about three orders of magnitude narrower than GRPO's. ``dual_clip`` is
    inherited and applies to the sequence ratio.
    """

    eps_low: float = 3e-4
    eps_high: float = 4e-4


def _sequence_metrics(seq_log_ratio: Tensor, mask: Tensor) -> dict[str, Tensor]:
    seq_ratio = torch.exp(seq_log_ratio.detach()).squeeze(-1)
    has_tokens = (mask.sum(-1) > 0).to(mask.dtype)
    return {
        "seq_ratio/mean": (seq_ratio * has_tokens).sum() / has_tokens.sum().clamp(min=1),
        "seq_ratio/min": masked_min(seq_ratio, has_tokens),
        "seq_ratio/max": masked_max(seq_ratio, has_tokens),
    }


def gspo_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: GSPOConfig) -> Tensor:
    """w_t = s_i where the sequence's unclipped branch is active, times 1[|δ_t| ≤ 20]."""
    clamped, inside = clamp_log_ratio(log_ratio)
    seq_log_ratio = sequence_mean(clamped, mask).expand_as(clamped)
    return clipped_weight(seq_log_ratio, advantages, mask, cfg) * inside


def gspo_token_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: GSPOConfig) -> Tensor:
    """w_t = s_i where the token's unclipped branch is active (the gradient bypasses δ)."""
    clamped, _ = clamp_log_ratio(log_ratio)
    return clipped_weight(sequence_mean(clamped, mask).expand_as(clamped), advantages, mask, cfg)


@register_objective(
    "gspo",
    config=GSPOConfig,
    weight=gspo_weight,
    aggregation="seq_mean_token_mean",
    level="sequence",
    paper=GSPO_PAPER,
    summary="Clipped surrogate on the sequence ratio exp(mean δ); one weight per completion.",
)
def gspo_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: GSPOConfig):
    r"""Group Sequence Policy Optimization (Zheng et al., 2025).

    Equation (docs/objectives.md#gspo-gspo-and-gspo-token-gspo_token)::

        s_i = exp( Σ_t m δ_{i,t} / Σ_t m )
        ℓ_i = −min(s_i·A_i, clip(s_i, 1 − eps_low, 1 + eps_high)·A_i), broadcast to the tokens of i

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: unused, (B, T).
        advantages: one advantage per completion, broadcast to (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`GSPOConfig`.

    Returns:
        per-token loss (B, T) and metrics ``clip/low_frac``, ``clip/high_frac`` (fractions of
        counted tokens whose sequence is clipped) and ``seq_ratio/mean|min|max``.

    Example:
        >>> import math, torch, mhpo
        >>> logp = torch.tensor([[math.log(2.0), 0.0]], dtype=torch.float64)  # s = sqrt(2)
        >>> out = mhpo.policy_loss("gspo", logp, torch.zeros_like(logp),
        ...                        torch.tensor([-1.0], dtype=torch.float64), torch.ones_like(logp))
        >>> out.per_token   # A < 0: −min(−√2, −(1 + 4e-4)) = √2
        tensor([[1.4142, 1.4142]], dtype=torch.float64)

    Deviations and assumptions:
        1. Advantages must be constant over a completion (checked); use ``gspo_token`` for
           per-token advantages.
        2. Clip fractions are weighted by tokens, like every other objective's, so that they
           are comparable across objectives.
    """
    seq_log_ratio = sequence_mean(log_ratio, mask)  # (B, 1)
    loss, metrics = clipped_loss(seq_log_ratio.expand_as(log_ratio), logp, advantages, mask, cfg)
    metrics.update(_sequence_metrics(seq_log_ratio, mask))
    return loss, metrics


register_objective(
    "luspo",
    config=GSPOConfig,
    weight=gspo_weight,
    aggregation="seq_mean_token_sum",
    level="sequence",
    paper="https://arxiv.org/abs/2602.05261",
    summary="Length-unbiased GSPO: GSPO's loss summed over each completion's tokens, not averaged.",
)(gspo_loss)


@register_objective(
    "gspo_token",
    config=GSPOConfig,
    weight=gspo_token_weight,
    aggregation="seq_mean_token_mean",
    paper=GSPO_PAPER,
    summary="GSPO with per-token advantages: sg[s_i]·exp(logp − sg[logp]) per token.",
)
def gspo_token_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: GSPOConfig):
    r"""GSPO-token: the sequence ratio's value with a per-token gradient path.

    Equation (docs/objectives.md#gspo-gspo-and-gspo-token-gspo_token)::

        s_{i,t} = sg[s_i] · exp(logp_{i,t} − sg[logp_{i,t}])
        ℓ_{i,t} = −min(s_{i,t}·A_{i,t}, clip(s_{i,t}, 1 − eps_low, 1 + eps_high)·A_{i,t})

    Equal in value and gradient to ``gspo`` when A is constant over each completion (tested).

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: log π_θ of the sampled tokens, (B, T); the gradient flows through it.
        advantages: (B, T), may vary per token.
        mask: (B, T) float 0/1.
        cfg: :class:`GSPOConfig`.

    Returns:
        per-token loss (B, T) and the metrics of ``gspo``.

    Example:
        >>> import math, torch, mhpo
        >>> logp = torch.tensor([[math.log(2.0), 0.0]], dtype=torch.float64)
        >>> out = mhpo.policy_loss("gspo_token", logp, torch.zeros_like(logp),
        ...                        torch.tensor([-1.0], dtype=torch.float64), torch.ones_like(logp))
        >>> out.per_token
        tensor([[1.4142, 1.4142]], dtype=torch.float64)

    Deviations and assumptions:
        1. The per-token log-ratio fed to the clip is sg[log s_i] + logp − sg[logp], whose
           exponential is exactly the s_{i,t} of docs/objectives.md.
    """
    seq_log_ratio = sequence_mean(log_ratio, mask).detach()  # (B, 1); sg[s_i]
    token_log_ratio = seq_log_ratio + (logp - logp.detach())  # value log s_i, gradient ∇logp
    loss, metrics = clipped_loss(token_log_ratio, logp, advantages, mask, cfg)
    metrics.update(_sequence_metrics(seq_log_ratio, mask))
    return loss, metrics
