"""Helpers shared by the objective families: the log-ratio clamp, masked statistics and
config validation."""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

# δ is clamped to [−20, 20] before exponentiation in every objective (verl uses the same
# bound): e^20 ≈ 4.9e8 is finite in float16/bfloat16 ranges after the products we take.
LOG_RATIO_BOUND = 20.0


def clamp_log_ratio(log_ratio: Tensor, bound: float = LOG_RATIO_BOUND) -> tuple[Tensor, Tensor]:
    """Clamp δ to [−bound, bound]; also return where δ was inside (where the gradient flows)."""
    inside = log_ratio.abs() <= bound
    return log_ratio.clamp(-bound, bound), inside


def log_ratio_bound(dtype: torch.dtype) -> float:
    """The clamp of δ for inputs of ``dtype``: 20, or less where e^δ times a few hundred (an
    advantage over a small normaliser) would overflow the gradient that flows back in that
    dtype. float16 (max 65504) gets 6 (r <= 403); bfloat16, float32 and float64 keep 20."""
    return float(min(LOG_RATIO_BOUND, math.floor(math.log(torch.finfo(dtype).max)) - 5))


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1; 0 when nothing is counted."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_fraction(condition: Tensor, mask: Tensor) -> Tensor:
    """Fraction of counted positions where ``condition`` holds."""
    return masked_mean(condition.to(mask.dtype), mask)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max of ``x`` over counted positions (−inf when nothing is counted)."""
    return torch.where(mask > 0, x, torch.full_like(x, -math.inf)).max()


def masked_min(x: Tensor, mask: Tensor) -> Tensor:
    """Min of ``x`` over counted positions (+inf when nothing is counted)."""
    return torch.where(mask > 0, x, torch.full_like(x, math.inf)).min()


def sequence_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Per-completion masked mean of ``x``: (B, T) -> (B, 1), 0 for empty completions."""
    return (x * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``; used by config ``__post_init__``."""
    if not condition:
        raise ValueError(message)


def check_eps(owner: str, eps_low: float | None, eps_high: float | None, *, allow_none_low: bool = False) -> None:
    """Validate a pair of clip offsets: finite, non-negative; ``eps_low`` < 1 for ratio clips."""
    if eps_low is None:
        check(allow_none_low, f"{owner}: eps_low=None (no lower bound) is not allowed; pass a float in [0, 1).")
    else:
        check(
            isinstance(eps_low, (int, float)) and 0 <= eps_low < 1,
            f"{owner}: eps_low must be in [0, 1) so that the lower bound 1 - eps_low stays positive; got {eps_low!r}.",
        )
    check(
        isinstance(eps_high, (int, float)) and 0 <= eps_high < math.inf,
        f"{owner}: eps_high must be a finite number >= 0; got {eps_high!r}.",
    )
