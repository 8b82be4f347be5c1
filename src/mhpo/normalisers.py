"""The global normalisers of a rollout batch, optionally summed across data-parallel ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist

Tensor = torch.Tensor


def global_normalisers(
    masks: Tensor | list[Tensor],
    *,
    max_length: int | None = None,
    process_group=None,
    all_reduce: bool = True,
) -> dict[str, float]:
    """Counts of a whole rollout batch, ready to pass as ``**kwargs`` to :func:`mhpo.policy_loss`.

    Give it every micro-batch mask of this process (or one mask). When
    ``torch.distributed`` is initialised, the counts are summed over ``process_group``
    (default: the world), so every rank normalises by the same global totals and the sum of
    all ranks' gradients is the full-batch gradient. DDP *averages* gradients over ranks, so
    with DDP multiply the loss by the world size (or use ``token_sum`` and divide yourself).

    ``all_reduce=False`` keeps the counts local, for masks that already cover every rank's rows.

    Returns:
        ``{"num_tokens": N, "num_seqs": B', "mean_length": N / B'}`` plus ``max_length``
        when given. Counts are floored at 1 so that an all-padding batch gives loss 0.

    Example:
        >>> global_normalisers(torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]]), max_length=3)
        {'num_tokens': 3.0, 'num_seqs': 2.0, 'mean_length': 1.5, 'max_length': 3}
    """
    masks = [masks] if isinstance(masks, Tensor) else list(masks)
    if not masks:
        raise ValueError("global_normalisers needs at least one (B, T) mask.")
    counts = torch.zeros(2, dtype=torch.float64, device=masks[0].device)
    for mask in masks:
        if mask.dim() != 2:
            raise ValueError(f"each mask must be (B, T); got shape {tuple(mask.shape)}.")
        lengths = (mask != 0).sum(-1)
        counts += torch.stack([lengths.sum(), (lengths > 0).sum()]).to(counts)
    if all_reduce and dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=process_group)
    tokens, seqs = (max(float(v), 1.0) for v in counts.tolist())
    out: dict[str, float] = {"num_tokens": tokens, "num_seqs": seqs, "mean_length": tokens / seqs}
    if max_length is not None:
        out["max_length"] = max_length
    return out
