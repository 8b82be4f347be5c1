"""One rank of the two-process data-parallel check in test_distributed.py (run as a script).

A tiny shared linear policy scores a fixed batch; each rank takes half the completions,
normalises with the *global* counts from mhpo.global_normalisers, and all-reduces (SUM) its
parameter gradient. Rank 0 also computes the single-process full-batch gradient and writes
the largest difference per objective to the output file.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

import mhpo
from batches import SELECTION_OFF  # a selection across the call's tokens moves with the split


def policy_logp(weight: torch.Tensor, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    logits = features @ weight  # (B, T, V)
    return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)


def main(out_path: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(0)
    batch, length, dim, vocab = 8, 6, 5, 7
    features = torch.randn(batch, length, dim, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, vocab, (batch, length), generator=gen)
    lengths = torch.tensor([6, 3, 1, 6, 2, 5, 4, 6])
    mask = (torch.arange(length) < lengths.unsqueeze(1)).double()
    advantages = mhpo.group_advantages(torch.randint(0, 2, (batch,), generator=gen).double(), 4)
    advantages[:4] = mhpo.group_advantages(torch.tensor([1.0, 0, 0, 1], dtype=torch.float64), 4)
    weight0 = torch.randn(dim, vocab, generator=gen, dtype=torch.float64)
    old_logp = policy_logp(weight0, features, tokens) - 0.3 * torch.rand(batch, length, generator=gen, dtype=torch.float64)

    rows = slice(rank * batch // world, (rank + 1) * batch // world)
    norms = mhpo.global_normalisers(mask[rows], max_length=length)  # all-reduced across ranks
    diffs = {}
    for name in mhpo.list_objectives():
        alpha = mhpo.adaptive_alpha(advantages) if mhpo.get_objective(name).hysteresis == "adaptive" else None
        weight = weight0.clone().requires_grad_(True)
        out = mhpo.policy_loss(
            name, policy_logp(weight, features[rows], tokens[rows]), old_logp[rows], advantages[rows], mask[rows],
            hysteresis=alpha, **norms, **SELECTION_OFF.get(name, {}),
        )  # fmt: skip
        out.loss.backward()
        grad = weight.grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        if rank == 0:
            full_weight = weight0.clone().requires_grad_(True)
            full = mhpo.policy_loss(
                name, policy_logp(full_weight, features, tokens), old_logp, advantages, mask,
                hysteresis=alpha, max_length=length, **SELECTION_OFF.get(name, {}),
            )  # fmt: skip
            full.loss.backward()
            scale = full_weight.grad.abs().max().item()
            diffs[name] = {"max_abs_diff": (grad - full_weight.grad).abs().max().item(), "grad_scale": scale}
    if rank == 0:
        with open(out_path, "w") as handle:
            json.dump(diffs, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
