"""Reducing a per-token loss (B, T) to a scalar: the aggregation modes of
docs/objectives.md#aggregation.

Every mode takes optional *global* normalisers. A trainer that splits a rollout batch into
micro-batches (or data-parallel ranks) passes the normalisers of the whole batch to each
piece; the sum of the pieces' losses then equals the full batch's loss, and so do the
gradients. Without them each piece normalises by its own counts.
"""

from __future__ import annotations

import math

import torch

from .objectives.registry import AGGREGATIONS

Tensor = torch.Tensor


def _positive(name: str, value: float | Tensor | None) -> None:
    if value is None:
        return
    number = float(value) if not isinstance(value, Tensor) or value.numel() == 1 else math.nan
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(
            f"{name} must be a finite number > 0 (a count or length of the whole rollout batch); got {value!r}."
        )


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_tokens: float | Tensor | None = None,
    num_seqs: float | Tensor | None = None,
    mean_length: float | Tensor | None = None,
    max_length: float | Tensor | None = None,
) -> Tensor:
    r"""Reduce ``per_token`` (B, T) to a scalar.

    With N = Σ m (counted tokens) and B' = completions with at least one counted token:

    ===========================  ====================================================
    ``token_mean``               Σ m ℓ / N
    ``seq_mean_token_mean``      (1/B') Σ_i (Σ_t m ℓ / Σ_t m)
    ``seq_mean_token_sum``       (1/B') Σ_i Σ_t m ℓ
    ``seq_mean_token_sum_norm``  (1/B') Σ_i Σ_t m ℓ / L,  L = ``max_length`` (default T)
    ``token_sum``                Σ m ℓ
    ``mean_length``              Σ m ℓ / (B'·L̄),  L̄ = ``mean_length`` (default N/B')
    ===========================  ====================================================

    Args:
        per_token: unreduced loss, (B, T).
        mask: 1 for counted tokens, 0 for padding, (B, T).
        mode: one of the names above.
        num_tokens: global N, replaces the local count in ``token_mean``.
        num_seqs: global B', replaces the local count in the ``seq_mean_*`` and
            ``mean_length`` modes.
        mean_length: global L̄ of the rollout batch, for ``mean_length``.
        max_length: the constant L of ``seq_mean_token_sum_norm`` (the generation limit).
            Pass it: the default, the padded width T, changes with the batch.

    Returns:
        a scalar tensor; 0 (not NaN) when nothing is counted.

    Example:
        >>> import torch
        >>> loss = torch.tensor([[1.0, 3.0], [5.0, 0.0]])
        >>> mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
        >>> aggregate(loss, mask, "token_mean")            # (1 + 3 + 5) / 3
        tensor(3.)
        >>> aggregate(loss, mask, "seq_mean_token_mean")   # ((1 + 3)/2 + 5/1) / 2
        tensor(3.5000)
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation '{mode}'; use one of: {', '.join(AGGREGATIONS)}.")
    if per_token.shape != mask.shape:
        raise ValueError(
            f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} must have the same (B, T) shape."
        )
    for name, value in (
        ("num_tokens", num_tokens),
        ("num_seqs", num_seqs),
        ("mean_length", mean_length),
        ("max_length", max_length),
    ):
        _positive(name, value)

    mask = mask.to(per_token.dtype)
    total = (per_token * mask).sum()
    if mode == "token_sum":
        return total
    if mode == "token_mean":
        return total / (num_tokens if num_tokens is not None else mask.sum().clamp(min=1))

    lengths = mask.sum(-1)  # (B,)
    seqs = num_seqs if num_seqs is not None else (lengths > 0).sum().clamp(min=1)
    if mode == "seq_mean_token_mean":
        return ((per_token * mask).sum(-1) / lengths.clamp(min=1)).sum() / seqs
    if mode == "seq_mean_token_sum":
        return total / seqs
    if mode == "seq_mean_token_sum_norm":
        return total / seqs / (max_length if max_length is not None else mask.shape[-1])
    # mean_length: with the local L̄ = N/B' this equals token_mean; it differs when a
    # micro-batch is normalised by the rollout batch's L̄.
    if mean_length is None:
        mean_length = lengths.sum() / (lengths > 0).sum().clamp(min=1)
        mean_length = mean_length.clamp(min=1)
    return total / (seqs * mean_length)
