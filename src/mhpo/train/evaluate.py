"""Held-out evaluation: greedy accuracy and avg@k on a fixed split."""

from __future__ import annotations

import torch

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
