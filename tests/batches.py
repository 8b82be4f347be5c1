"""Small float64 test batches with padding, built from a seeded generator."""

from __future__ import annotations

import dataclasses
import socket

import torch

import mhpo

SEQUENCE_LEVEL = [name for name in mhpo.list_objectives() if mhpo.get_objective(name).level == "sequence"]
# Objectives that select tokens across one loss call (spec.selection): the selection, which
# depends on which tokens share the call, is switched off where a test splits a batch.
SELECTION_OFF = {
    "clip_cov": {"clip_cov_lb": 5.0, "clip_cov_ub": 5.0},  # no covariance strictly inside (5, 5)
    "kl_cov": {"ppo_kl_coef": 0.0},  # the selected tokens' penalty is zero
    "m2po": {"m2_threshold": 1e9},  # every batch is inside the budget
}


@dataclasses.dataclass
class Batch:
    logp: torch.Tensor  # (B, T), requires grad
    old_logp: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B,)
    mask: torch.Tensor  # (B, T) float 0/1
    ref_logp: torch.Tensor  # (B, T)

    def inputs(self):
        return self.logp, self.old_logp, self.advantages, self.mask


def make_batch(
    batch: int = 6,
    length: int = 7,
    *,
    seed: int = 0,
    spread: float = 0.6,
    group_size: int = 3,
    empty_row: bool = True,
    dtype: torch.dtype = torch.float64,
) -> Batch:
    """Random log-probs with |δ| up to ~spread, right padding, optionally one empty completion."""
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=gen, dtype=dtype) * 3 - 0.05 - spread  # logp = old + δ stays < 0
    log_ratio = (torch.rand(batch, length, generator=gen, dtype=dtype) * 2 - 1) * spread
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length  # at least one full-length completion
    if empty_row:
        lengths[-1] = 0
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).to(dtype)
    rewards = torch.randint(0, 2, (batch,), generator=gen).to(dtype)
    rewards[:group_size] = torch.tensor([1.0] + [0.0] * (group_size - 1), dtype=dtype)  # one informative group
    advantages = mhpo.group_advantages(rewards, group_size)
    ref = old + (torch.rand(batch, length, generator=gen, dtype=dtype) - 0.5) * 0.4
    logp = (old + log_ratio).requires_grad_(True)
    return Batch(logp, old, advantages, mask, ref)


def probability_batch() -> Batch:
    """A batch whose log-probs are those of real probabilities (logp <= −1e-3): the objectives
    that read π_θ itself (DPPO, the covariance ones) are compared with the hosts on these."""
    b = make_batch(batch=9, length=8, seed=83, spread=0.7, group_size=3, empty_row=False)
    return dataclasses.replace(b, logp=b.logp.detach().clamp(max=-1e-3).requires_grad_(True))


def free_port() -> int:
    """A free TCP port on the loopback interface, for test process groups."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
