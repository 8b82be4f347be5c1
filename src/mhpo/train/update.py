"""Update: mu passes over a prepared batch, each split into mini-batches (one optimizer step
each), each mini-batch split into micro-batches whose losses use the mini-batch's global
normalisers, so that gradient accumulation gives the mini-batch's gradient exactly."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator

import torch

import mhpo

from ..objectives.registry import ObjectiveSpec
from .config import TrainConfig
from .models import Policy
from .prepare import Batch
from .timing import Timer

Tensor = torch.Tensor
RELATIVE_CLIP_WARMUP = 10  # optimizer steps before --relative-clip has a median to go by


class GradClip:
    """Gradient-norm clipping at --max-grad-norm, and with --relative-clip K at most K times the
    median pre-clip norm of the run's earlier optimizer steps (``history``, checkpointed)."""

    def __init__(self, max_norm: float, relative: float | None, history: list[float] | None = None) -> None:
        self.max_norm, self.relative = max_norm, relative
        self.history: list[float] = list(history or [])

    def threshold(self) -> float:
        threshold = self.max_norm
        # Steps with no gradient at all (every group's rewards equal, as often at the start of
        # sparse-reward training) say nothing about the scale of a gradient: counted, their zeros
        # would pull the median to 0 and every later update would be scaled to nothing.
        informative = [n for n in self.history if n > 0]
        if self.relative is not None and len(informative) >= RELATIVE_CLIP_WARMUP:
            threshold = min(threshold, self.relative * statistics.median(informative))
        return threshold

    def __call__(self, parameters) -> tuple[float, float]:
        """Clip the gradients in place; returns (pre-clip norm, threshold)."""
        threshold = self.threshold()
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, threshold))
        self.history.append(norm)
        return norm, threshold


def merge_metrics(parts: list[tuple[float, dict[str, Tensor]]]) -> dict[str, float]:
    """Combine micro-batch metrics: max of '/max', min of '/min', token-weighted mean of the
    rest (undefined values skipped)."""
    merged: dict[str, float] = {}
    keys = {k for _, m in parts for k in m}
    for key in keys:
        values = [(w, float(m[key])) for w, m in parts if key in m and math.isfinite(float(m[key]))]
        if not values:
            merged[key] = math.nan
        elif key.endswith("/max"):
            merged[key] = max(v for _, v in values)
        elif key.endswith("/min"):
            merged[key] = min(v for _, v in values)
        else:
            total = sum(w for w, _ in values)
            merged[key] = sum(w * v for w, v in values) / total if total > 0 else values[0][1]
    return merged


def minibatches(batch: Batch, cfg: TrainConfig, generator: torch.Generator) -> Iterator[Tensor]:
    """Row indices of each optimizer step: mu shuffled passes, each cut into ``minibatches``."""
    rows = batch.sequences.shape[0]
    for _ in range(cfg.mu):
        order = torch.randperm(rows, generator=generator, device=batch.sequences.device)
        for minibatch in order.tensor_split(cfg.minibatches):
            if minibatch.numel() == 0:
                continue
            # a group's rows side by side, so that micro-batches share their prompt
            yield minibatch.sort().values if cfg.share_prompts else minibatch


def micro_batches(batch: Batch, rows: Tensor, cfg: TrainConfig) -> list[Tensor]:
    """A mini-batch's rows in micro-batches of at most ``micro_batch_size``, bucketed by length:
    rows sorted by completion length (with ``share_prompts``, whole groups of rows that share a
    prompt, by their longest completion), so that each micro-batch, cut to its own longest
    completion (:func:`trimmed`), computes little padding. The loss of every micro-batch uses
    the mini-batch's normalisers, so the accumulated gradient is the same sum in another order."""
    lengths = batch.attention[rows, batch.width :].sum(-1)  # completions are right-padded
    if cfg.share_prompts:  # a group's rows are side by side (see minibatches): keep them so
        group = rows // cfg.group_size
        groups = int(group.max()) + 1
        longest = torch.zeros(groups, dtype=lengths.dtype, device=lengths.device).scatter_reduce(0, group, lengths, "amax")
        key = longest[group] * groups + group  # by the group's longest, then by group
    else:
        key = lengths
    order = torch.sort(key, stable=True).indices
    return list(rows[order].split(cfg.micro_batch_size))


def trimmed(batch: Batch, micro: Tensor) -> tuple[Tensor, Tensor, int, slice]:
    """The micro-batch's sequences and attention without the columns that are padding in every
    one of its rows (left of the longest prompt, right of the longest completion), its prompt
    width, and the completion columns kept. Causal attention never reads a right-hand column,
    and a masked left-hand one gets weight exactly 0: the same function of the weights."""
    attention = batch.attention[micro]
    completion = max(int(attention[:, batch.width :].sum(-1).max()), 1)
    lead = int((attention[:, : batch.width] == 0).long().cumprod(-1).sum(-1).min())
    columns = slice(lead, batch.width + completion)
    return batch.sequences[micro, columns], attention[:, columns], batch.width - lead, slice(0, completion)


def accumulate(batch: Batch, rows: Tensor, policy: Policy, spec: ObjectiveSpec, cfg: TrainConfig,
               timer: Timer) -> tuple[float, int, list[tuple[float, dict[str, Tensor]]]]:  # fmt: skip
    """The gradient of one mini-batch, accumulated over its micro-batches; returns its loss,
    its counted tokens and each micro-batch's (token count, metrics). An idle batch's gradient
    is exactly 0 (every policy term is a multiple of A): set, not computed."""
    model = policy.model
    if batch.idle:
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.grad = torch.zeros_like(parameter)
        return 0.0, 0, []
    options = batch.recipe.minibatch(rows).loss_options()  # the batch's α, this mini-batch's normalisers
    loss, tokens, parts = 0.0, 0, []
    for micro in micro_batches(batch, rows, cfg):
        sequences, attention, width, kept = trimmed(batch, micro)
        mask = batch.mask[micro, kept]
        with timer("forward"):
            logp, entropy = policy.completion_logprobs(
                sequences, attention, width,
                with_entropy=True, differentiable_entropy=cfg.entropy_coef != 0, share_prompts=cfg.share_prompts,
            )  # fmt: skip
            out = mhpo.policy_loss(
                spec, logp, batch.old_logp[micro, kept] if batch.old_logp is not None else logp.detach(),
                batch.advantages[micro], mask, aggregation=cfg.aggregation,
                ref_logp=batch.ref_logp[micro, kept] if batch.ref_logp is not None else None,
                beta=cfg.beta, kl_estimator=cfg.kl_estimator, entropy=entropy, entropy_coef=cfg.entropy_coef,
                **options, **cfg.hp,
            )  # fmt: skip
        with timer("backward"):
            out.loss.backward()
        loss += out.loss.item()
        tokens += int(mask.sum())
        parts.append((float(mask.sum()), out.metrics))
    return loss, tokens, parts


def update(batch: Batch, policy: Policy, optimizer: torch.optim.Optimizer, scheduler, clip: GradClip,
           generator: torch.Generator, spec: ObjectiveSpec, cfg: TrainConfig) -> dict[str, float]:  # fmt: skip
    """Learn from ``batch``: every optimizer step of the update, and its metrics."""
    timer = Timer(policy.device)
    losses, norms, thresholds, parts, tokens = [], [], [], [], 0
    policy.model.train()
    with timer("update"):
        for rows in minibatches(batch, cfg, generator):
            loss, counted, micro_parts = accumulate(batch, rows, policy, spec, cfg, timer)
            with timer("optimizer"):
                norm, threshold = clip(policy.model.parameters())
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
            norms.append(norm)
            thresholds.append(threshold)
            parts += micro_parts
            tokens += counted
    elapsed = timer.seconds["update"]
    metrics = {
        **merge_metrics(parts),
        **{f"time/{name}": timer.seconds[name] for name in ("forward", "backward", "optimizer", "update")},
        "loss": sum(losses) / max(len(losses), 1),
        "grad_norm/mean": sum(norms) / max(len(norms), 1),
        "grad_norm/max": max(norms, default=0.0),
        # the share of optimizer steps whose gradient the threshold actually shrank
        "grad_norm/clipped_frac": sum(n > t for n, t in zip(norms, thresholds)) / max(len(norms), 1),
        "lr": scheduler.get_last_lr()[0],
        "tokens/update_per_s": tokens / elapsed if elapsed > 0 else 0.0,
    }
    if cfg.relative_clip is not None:
        metrics["grad_norm/threshold"] = min(thresholds, default=math.inf)
    return metrics
