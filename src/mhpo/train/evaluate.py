"""Held-out evaluation: greedy accuracy and avg@k on a fixed split."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Callable

import torch

from ..files import atomic_write_text
from .config import TrainConfig
from .models import Policy
from .rollout import generate


@torch.no_grad()
def evaluate(
    policy: Policy,
    task,
    problems: list,
    *,
    k: int = 4,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
    batch: int = 256,
) -> dict[str, float]:
    """``eval/accuracy``: share of problems whose greedy completion earns the full reward (1);
    ``eval/avg@k``: the same share averaged over k sampled completions per problem;
    ``eval/reward``: mean reward of the greedy completions."""
    tok = policy.tokenizer
    prompts = [tok.prompt_ids(p) for p in problems]
    gen = torch.Generator(device=policy.device).manual_seed(seed)

    def scores(items: list[int], temp: float) -> list[float]:
        out = []
        for start in range(0, len(items), batch):
            rows = items[start : start + batch]
            rollout = generate(policy, [prompts[i] for i in rows], max_new_tokens=max_new_tokens,
                               temperature=temp, top_p=top_p, generator=gen)  # fmt: skip
            out += [task.score(text, problems[i]) for text, i in zip(rollout.texts, rows)]
        return out

    greedy = scores(list(range(len(problems))), 0.0)
    sampled = scores([i for i in range(len(problems)) for _ in range(k)], temperature)
    return {
        "eval/accuracy": sum(s >= 1.0 for s in greedy) / len(greedy),
        "eval/avg@k": sum(s >= 1.0 for s in sampled) / len(sampled),
        "eval/reward": sum(greedy) / len(greedy),
    }


def baseline_cache(warm_start: pathlib.Path, task, cfg: TrainConfig) -> pathlib.Path:
    """Where step 0's evaluation of runs that share a warm start is cached: it depends only on
    the warm start, the task and the evaluation options (not on the objective)."""
    task_config = getattr(task, "config", None)
    identity = {
        "version": 1,
        "warm_start": warm_start.name,
        "task": [task.name, dataclasses.asdict(task_config) if dataclasses.is_dataclass(task_config) else None],
        "evaluation": [cfg.eval_size, cfg.eval_k, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed, cfg.dtype],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return warm_start.with_name(f"eval0-{digest}.json")


def cached_evaluation(path: pathlib.Path, evaluate_now: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The evaluation cached at ``path`` (as JSON), or ``evaluate_now()``'s, then cached.
    Evaluation draws from its own seeded generator, so skipping it leaves training unchanged."""
    try:
        return {**json.loads(path.read_text()), "time/eval": 0.0}
    except (OSError, ValueError):  # not cached yet, or a damaged file: evaluate
        result = evaluate_now()
        try:
            atomic_write_text(path, json.dumps(result, sort_keys=True))
        except OSError:  # a read-only cache costs time, not correctness
            pass
        return result
