"""Collect: sample G completions for each of a step's prompts, score them, and (with dynamic
sampling) keep only the groups whose rewards differ."""

from __future__ import annotations

import dataclasses

import torch

from .config import TrainConfig
from .models import Policy
from .rollout import Rollout, generate
from .timing import Timer

Tensor = torch.Tensor
PROMPT_CHUNK = 1024


class PromptStream:
    """An endless, seeded stream of training problems; its position is checkpointed."""

    def __init__(self, task, seed: int) -> None:
        self.task, self.seed, self.position = task, seed, 0
        self._chunk_index, self._chunk = -1, []

    def take(self, count: int) -> list:
        out = []
        while len(out) < count:
            index, offset = divmod(self.position, PROMPT_CHUNK)
            if index != self._chunk_index:
                self._chunk = self.task.problems("train", PROMPT_CHUNK, seed=self.seed * 1_000_003 + index)
                self._chunk_index = index
            out.append(self._chunk[offset])
            self.position += 1
        return out


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO's soft overlong punishment R_len."""
    if buffer <= 0 or length <= max_length - buffer:
        return 0.0
    if length <= max_length:
        return ((max_length - buffer) - length) / buffer
    return -1.0


@dataclasses.dataclass(frozen=True)
class Collected:
    """A step's completions, the G of each prompt consecutive, and their rewards.

    Attributes:
        rollout: the kept completions.
        rewards: (B,) on the host: the task's reward plus the overlong punishment, if any.
    """

    rollout: Rollout
    rewards: Tensor


@dataclasses.dataclass(frozen=True)
class Scored:
    """One round of sampling, scored."""

    rollout: Rollout
    task_rewards: list[float]  # the task's rewards, as the reward metrics report them
    rewards: Tensor  # (B,) shaped: task reward + overlong punishment
    parts: dict[str, list[float]]  # each reward function's values, when the task has several


def sample_and_score(policy: Policy, task, problems: list, cfg: TrainConfig, generator: torch.Generator,
                     timer: Timer) -> Scored:  # fmt: skip
    prompts = [policy.tokenizer.prompt_ids(p) for p in problems for _ in range(cfg.group_size)]
    owners = [p for p in problems for _ in range(cfg.group_size)]
    with timer("generate"):
        rollout = generate(policy, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                           top_p=cfg.top_p, generator=generator)  # fmt: skip
    with timer("score"):
        parts: dict[str, list[float]] = {}
        score_parts = getattr(task, "score_parts", None)
        if score_parts is not None:  # several reward functions: each is logged on its own
            scored = [score_parts(text, p) for text, p in zip(rollout.texts, owners)]
            task_rewards = [total for total, _ in scored]
            for _, values in scored:
                for name, value in values.items():
                    parts.setdefault(name, []).append(value)
        else:
            task_rewards = [task.score(text, p) for text, p in zip(rollout.texts, owners)]
        buffer = cfg.preset("overlong_buffer")
        rewards = torch.tensor(
            [r + overlong_penalty(len(c), cfg.max_new_tokens, buffer) for r, c in zip(task_rewards, rollout.completions)],
            dtype=torch.float32, device="cpu",  # host-side bookkeeping; the batch moves to the device
        )  # fmt: skip
    return Scored(rollout, task_rewards, rewards, parts)


def collect(policy: Policy, task, prompts: PromptStream, cfg: TrainConfig,
            generator: torch.Generator) -> tuple[Collected, dict[str, float]]:  # fmt: skip
    """Sample and score rounds of groups until the step has ``prompts_per_step`` of them. With
    dynamic sampling, groups whose rewards are all equal are dropped and more are drawn (at
    most ``dynamic_sampling_rounds`` rounds); when no round found one, the last round is kept."""
    G, wanted = cfg.group_size, cfg.prompts_per_step * cfg.group_size
    dynamic = cfg.preset("dynamic_sampling")
    timer = Timer(policy.device)
    rounds: list[Scored] = []
    kept: list[tuple[Rollout, Tensor]] = []
    constant: list[bool] = []  # per group drawn: are its rewards all equal?
    while sum(len(r) for r, _ in kept) < wanted and len(rounds) < (cfg.dynamic_sampling_rounds if dynamic else 1):
        need = cfg.prompts_per_step - sum(len(r) for r, _ in kept) // G
        scored = sample_and_score(policy, task, prompts.take(need), cfg, generator, timer)
        rounds.append(scored)
        grouped = scored.rewards.view(-1, G)
        flat = (grouped.amax(-1) == grouped.amin(-1)).tolist()
        constant += flat
        rows = [g * G + j for g, c in enumerate(flat) if not (dynamic and c) for j in range(G)]
        if rows:
            kept.append((scored.rollout.select(rows), scored.rewards[rows]))
    if not kept:  # dynamic sampling found no informative group: train on the last round (A = 0)
        kept = [(rounds[-1].rollout, rounds[-1].rewards)]
    rewards = torch.cat([r for _, r in kept])[:wanted]
    rollout = Rollout.concat([r for r, _ in kept]).select(list(range(len(rewards))))
    return Collected(rollout, rewards), {**_reward_metrics(rounds, rewards, constant, G), **timer.metrics(),
                                         "time/prefill": rollout.prefill_s, "time/decode": rollout.decode_s}  # fmt: skip


def _reward_metrics(rounds: list[Scored], rewards: Tensor, constant: list[bool], G: int) -> dict[str, float]:
    raw = torch.tensor([r for scored in rounds for r in scored.task_rewards], device="cpu")
    parts: dict[str, list[float]] = {}
    for scored in rounds:
        for name, values in scored.parts.items():
            parts.setdefault(name, []).extend(values)
    return {
        "reward/mean": raw.mean().item(),
        "reward/std": raw.std().item() if raw.numel() > 1 else 0.0,
        "reward/shaped_mean": rewards.mean().item(),
        "reward/zero_variance_frac": sum(constant) / max(len(constant), 1),
        "sampling/rounds": float(len(rounds)),
        "sampling/groups": len(rewards) // G,
        **{f"reward_fn/{name}": sum(v) / len(v) for name, v in parts.items()},
    }
