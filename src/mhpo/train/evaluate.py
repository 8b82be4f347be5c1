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
from .models import Policy, kernels
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


def baseline_cache(warm_start: pathlib.Path, policy: Policy, task, cfg: TrainConfig) -> pathlib.Path:
    """Where step 0's evaluation of runs that share a warm start is cached: it depends only on
    the warm start, the task, the evaluation options and the kernels (not on the objective)."""
    return warm_start.with_name(f"eval0-{_identity_digest(warm_start.name, policy, task, cfg)}.json")


def start_cache(directory: pathlib.Path, policy: Policy, task, problems: list, cfg: TrainConfig) -> pathlib.Path:
    """Where step 0's evaluation of a run without a warm start is cached, under ``directory``.
    It is keyed by what the evaluation reads: a hash of the starting weights (every tensor of
    the model's state, adapters included), the held-out prompts as token ids (so the tokenizer
    and chat template too), the problems, the task and the evaluation options. Runs that start
    from the same weights (a comparison's objectives on one seed) evaluate step 0 once."""
    prompts = hashlib.sha256(json.dumps([policy.tokenizer.prompt_ids(p) for p in problems]).encode())
    prompts.update(repr(problems).encode())
    start = f"{cfg.model}:{weights_digest(policy.model)}:{prompts.hexdigest()}"
    return directory / "eval0" / f"eval0-{_identity_digest(start, policy, task, cfg)}.json"


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every tensor in ``model``'s state (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().data if flat.numel() else b"")
    return digest.hexdigest()


def _identity_digest(start: str, policy: Policy, task, cfg: TrainConfig) -> str:
    task_config = getattr(task, "config", None)
    identity = {
        "version": 1,
        "warm_start": start,
        "kernels": kernels(policy.device),
        "task": [task.name, dataclasses.asdict(task_config) if dataclasses.is_dataclass(task_config) else None],
        "evaluation": [cfg.eval_size, cfg.eval_k, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed, cfg.dtype],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def cached_evaluation(path: pathlib.Path, evaluate_now: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The evaluation cached at ``path`` (as JSON), or ``evaluate_now()``'s, then cached.
    Evaluation draws from its own seeded generator, so skipping it leaves training unchanged."""
    try:
        return {**json.loads(path.read_text()), "time/eval": 0.0}
    except (OSError, ValueError):  # not cached yet, or a damaged file: evaluate
        result = evaluate_now()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(result, sort_keys=True))
        except OSError:  # a read-only cache costs time, not correctness
            pass
        return result
