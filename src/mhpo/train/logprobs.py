"""Log-probabilities (and entropies) of chosen tokens without a full-vocabulary float32 tensor.

The plain way, ``log_softmax(hidden @ W.T).gather(...)``, materialises (N, V) logits and an
(N, V) float32 log-softmax, and keeps them for the backward pass: at V = 49,152 and
N = 4,096 tokens that is 0.8 GB each. :func:`token_logprobs` instead walks over row chunks,
computes each chunk's logits, keeps only the log-sum-exp per row, and recomputes the chunk's
logits in the backward pass. Peak memory is then a few chunks of (chunk, V), whatever N is.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

class _LinearLogProb(torch.autograd.Function):
    """log softmax(hidden @ weight.T)[targets], chunked over rows, with recomputation.

    The (chunk, V) buffers are allocated once per call and reused by every chunk: a fresh
    buffer of that size is a fresh mapping of memory on most allocators, and filling it page by
    page cost more than the arithmetic done in it.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int, with_entropy: bool):
        rows = hidden.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # float32, or float64 in tests
        logp = torch.empty(rows, dtype=acc, device=hidden.device)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp) if with_entropy else None
        buffers = _Buffers(min(chunk, rows), weight.shape[0], hidden.dtype, acc, hidden.device)
        exp_buffer = buffers.extra() if with_entropy else None
        for start in range(0, rows, chunk):
            end = min(start + chunk, rows)
            logits = buffers.logits(hidden[start:end], weight)  # (chunk, V) in acc
            chosen = logits.gather(-1, targets[start:end, None]).squeeze(-1)
            peak = logits.amax(-1)
            shifted = logits.sub_(peak[:, None])  # x − max, in place
            # e = exp(x − max): in place, unless the entropy needs the shifted logits beside it
            scaled = torch.exp(shifted, out=exp_buffer[: end - start]) if entropy is not None else shifted.exp_()
            total = scaled.sum(-1)
            lse[start:end] = peak + total.log()
            logp[start:end] = chosen - lse[start:end]
            if entropy is not None:
                # H = −Σ p log p with p = e/s and log p = (x − max) − log s:  H = log s − Σ e·(x − max) / s,
                # a row-wise dot product of what the forward has (no logarithm per vocabulary entry)
                dot = torch.bmm(scaled.unsqueeze(1), shifted.unsqueeze(2)).view(-1)
                entropy[start:end] = total.log() - dot / total
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk = chunk
        if entropy is None:
            return logp, torch.empty(0, device=hidden.device)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: Tensor, _grad_entropy: Tensor):
        hidden, weight, targets, lse = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        acc = lse.dtype
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_weight else None
        buffers = _Buffers(min(ctx.chunk, hidden.shape[0]), weight.shape[0], hidden.dtype, acc, hidden.device)
        for start in range(0, hidden.shape[0], ctx.chunk):
            end = min(start + ctx.chunk, hidden.shape[0])
            h = hidden[start:end]
            g = grad_logp[start:end].to(acc)
            # ∂ logp / ∂ logits = onehot(target) − softmax(logits), built in one buffer
            grad_logits = buffers.logits(h, weight).sub_(lse[start:end, None]).exp_().mul_(-g[:, None])
            grad_logits.scatter_add_(-1, targets[start:end, None], g[:, None])
            grad_logits = buffers.low(grad_logits)
            if need_hidden:
                torch.mm(grad_logits, weight, out=grad_hidden[start:end])
            if need_weight and hidden.dtype in (torch.bfloat16, torch.float16):
                grad_weight.add_(grad_logits.T @ h)  # a low-precision matmul, summed over chunks in float32
            elif need_weight:
                grad_weight.addmm_(grad_logits.T.to(acc), h.to(acc))
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


class _Buffers:
    """One call's reusable (chunk, V) buffers: the logits in the accumulation dtype and, for
    low-precision inputs, the matmul's own output beside them."""

    def __init__(self, rows: int, vocab: int, dtype: torch.dtype, acc: torch.dtype, device) -> None:
        self.shape, self.acc, self.device = (rows, vocab), acc, device
        self.wide = torch.empty(self.shape, dtype=acc, device=device)
        self.narrow = torch.empty(self.shape, dtype=dtype, device=device) if dtype != acc else None

    def extra(self) -> Tensor:
        return torch.empty(self.shape, dtype=self.acc, device=self.device)

    def logits(self, hidden: Tensor, weight: Tensor) -> Tensor:
        """hidden @ weight.T in the accumulation dtype (the matmul in the inputs' dtype)."""
        rows = hidden.shape[0]
        if self.narrow is None:
            return torch.mm(hidden, weight.T, out=self.wide[:rows])
        return self.wide[:rows].copy_(torch.mm(hidden, weight.T, out=self.narrow[:rows]))

    def low(self, values: Tensor) -> Tensor:
        """``values`` in the inputs' dtype."""
        return values if self.narrow is None else self.narrow[: values.shape[0]].copy_(values)


def chunk_rows(vocab: int, budget: int = 2**25) -> int:
    """Rows per chunk so that one (chunk, V) buffer holds about ``budget`` elements
    (2^25 float32 = 128 MiB)."""
    return max(1, budget // max(vocab, 1))


def token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    chunk: int | None = None,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probabilities of ``targets`` under ``softmax(hidden @ weight.T)``, in float32
    (float64 for float64 inputs). With bfloat16 (or float16) inputs the matmuls run in that
    dtype and the log-softmax, the entropy and the weight gradient's sum over chunks in float32.

    Args:
        hidden: (..., H) final hidden states (the inputs of the LM head).
        weight: (V, H) LM-head weight (no bias).
        targets: (...) token ids.
        chunk: rows per chunk; memory is O(chunk·V). Default: :func:`chunk_rows` of V.
        with_entropy: also return the entropy of each row's distribution (no gradient).

    Returns:
        ``(logp, entropy)`` shaped like ``targets``; ``entropy`` is None unless requested.

    Example:
        >>> h, w = torch.randn(5, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
        >>> t = torch.tensor([0, 6, 2, 2, 1])
        >>> logp, _ = token_logprobs(h, w, t, chunk=2)
        >>> torch.allclose(logp.double(), torch.log_softmax(h @ w.T, -1)[torch.arange(5), t], atol=1e-6)
        True
    """
    shape = targets.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    chunk = chunk or chunk_rows(weight.shape[0])
    logp, entropy = _LinearLogProb.apply(flat_hidden, weight, flat_targets, chunk, with_entropy)
    return logp.view(shape), (entropy.view(shape) if with_entropy else None)


def plain_token_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
    """The reference path: full logits, float32 log-softmax, gather (for tests and benchmarks)."""
    logits = (hidden @ weight.T).to(torch.promote_types(hidden.dtype, torch.float32))
    return torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
