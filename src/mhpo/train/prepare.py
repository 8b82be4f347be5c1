"""Prepare: a step's scored completions as the tensors an update learns from, with the
objective's recipe (advantages at its scale, α, normalisers) and the log-probs the loss
compares against (the rollout policy's and the KL reference's)."""

from __future__ import annotations

import dataclasses

import torch

import mhpo

from ..objectives.registry import ObjectiveSpec
from ..rollout import RolloutBatch
from .collect import Collected
from .config import TrainConfig
from .models import Policy
from .rollout import pack
from .timing import Timer

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class Batch:
    """One rollout batch, ready for the update.

    Attributes:
        sequences, attention: (B, P + C) left-padded prompts and right-padded completions.
        width: P, where the completions start.
        mask: (B, C) the completion tokens the loss counts.
        rewards: (B,) shaped rewards.
        recipe: the objective's advantages, α and normalisers for this batch.
        idle: every advantage is 0 and nothing else contributes: the gradient is exactly 0.
        old_logp: (B, C) log π_old (None on-policy, where it is the detached log π_θ; and idle).
        ref_logp: (B, C) log π_ref (None without KL).
    """

    sequences: Tensor
    attention: Tensor
    width: int
    mask: Tensor
    rewards: Tensor
    recipe: RolloutBatch
    idle: bool = False
    old_logp: Tensor | None = None
    ref_logp: Tensor | None = None

    @property
    def advantages(self) -> Tensor:
        return self.recipe.advantages


def prepare(collected: Collected, policy: Policy, reference: torch.nn.Module | None, spec: ObjectiveSpec,
            cfg: TrainConfig, *, skip_idle: bool) -> tuple[Batch, dict[str, float]]:  # fmt: skip
    """The batch and its metrics. ``skip_idle``: a batch with nothing to learn (every
    advantage 0, no KL or entropy term) is marked idle and its old log-probs are not computed;
    pass False when the forward pass draws random numbers (dropout), whose stream would then
    move differently."""
    batch, metrics = pack_batch(collected, policy, spec, cfg)
    idle = skip_idle and cfg.beta == 0 and cfg.entropy_coef == 0 and not bool(batch.advantages.any())
    timer = Timer(policy.device)
    with timer("old_logp"):
        on_policy = cfg.mu == 1 and cfg.minibatches == 1  # π_old is π_θ itself: its log-probs, detached
        old_logp = None if on_policy or idle else completion_logprobs(policy, batch, cfg)
    with timer("ref_logp"):
        ref_logp = reference_logprobs(policy, reference, batch, cfg) if cfg.beta > 0 else None
    batch = dataclasses.replace(batch, idle=idle, old_logp=old_logp, ref_logp=ref_logp)
    return batch, {**metrics, **timer.metrics(), "update/skipped": float(idle)}


def pack_batch(collected: Collected, policy: Policy, spec: ObjectiveSpec, cfg: TrainConfig) -> tuple[Batch, dict[str, float]]:
    """The completions as tensors on the policy's device, with the objective's recipe; with
    the overlong filter, truncated completions count no tokens."""
    rollout, device = collected.rollout, policy.device
    sequences, attention, width, mask = pack(rollout.prompts, rollout.completions, policy.tokenizer.pad_id, device)
    rewards = collected.rewards.to(device)
    truncated = torch.tensor(rollout.truncated, device=device)
    lengths = mask.sum(-1).float()
    metrics = {
        "length/prompt_mean": sum(len(p) for p in rollout.prompts) / len(rollout.prompts),
        "length/mean": lengths.mean().item(),
        "length/max": lengths.max().item(),
        "length/truncated_frac": truncated.float().mean().item(),
    }
    if cfg.preset("overlong_filter"):
        mask = mask * (~truncated).long().unsqueeze(-1)
        attention = attention.clone()
        attention[:, width:] = mask
    recipe = mhpo.prepare_rollout(spec, rewards, mask, group_size=cfg.group_size, advantage_scale=cfg.advantage_scale,
                                  hysteresis=cfg.hysteresis, alpha_min=cfg.alpha_min, max_length=cfg.max_new_tokens)  # fmt: skip
    return Batch(sequences, attention, width, mask, rewards, recipe), metrics


@torch.no_grad()
def completion_logprobs(policy: Policy, batch: Batch, cfg: TrainConfig, *, model: torch.nn.Module | None = None) -> Tensor:
    """(B, C) log-probs of the batch's completions under the policy (or ``model``)."""
    parts = []
    for rows in torch.arange(batch.sequences.shape[0], device=policy.device).split(cfg.micro_batch_size):
        logp, _ = policy.completion_logprobs(batch.sequences[rows], batch.attention[rows], batch.width, model=model,
                                             share_prompts=cfg.share_prompts)  # fmt: skip
        parts.append(logp)
    return torch.cat(parts)


def reference_logprobs(policy: Policy, reference: torch.nn.Module | None, batch: Batch, cfg: TrainConfig) -> Tensor:
    """(B, C) log-probs under the KL reference: ``reference``, or with LoRA (None) the policy
    with its adapters disabled."""
    if reference is None:
        with policy.adapter_disabled():
            return completion_logprobs(policy, batch, cfg)
    return completion_logprobs(policy, batch, cfg, model=reference)
