"""Warm start: supervised fine-tuning on solver demonstrations, so that RL begins from a
policy with low but non-zero reward, as it would from a pretrained model. The result is
cached on disk under a hash of everything that determines it, so it is made once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time

import torch

from ..files import atomic_path, cache_dir
from .checkpoint import load_state
from .models import Policy, kernels
from .rollout import pack

WARMSTART_VERSION = 1


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    steps: int = 300
    lr: float = 3e-3
    batch: int = 64
    examples: int = 2000


def cache_key(model_config, task, config: WarmStartConfig, kernels: str = "") -> str:
    identity = {
        "version": WARMSTART_VERSION,
        # which device the model ran on is not part of what it is, the kernels that computed it are
        "model": {k: v for k, v in dataclasses.asdict(model_config).items() if k != "device"},
        "kernels": kernels,
        "task": task.name,
        "task_config": dataclasses.asdict(task.config) if dataclasses.is_dataclass(getattr(task, "config", None)) else None,
        "warmstart": dataclasses.asdict(config),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def supervised_loss(policy: Policy, prompts: list[list[int]], targets: list[list[int]]) -> torch.Tensor:
    """Mean negative log-likelihood of the target tokens given the prompts."""
    sequences, attention, width, mask = pack(prompts, targets, policy.tokenizer.pad_id, policy.device)
    logp, _ = policy.completion_logprobs(sequences, attention, width)
    mask = mask.to(logp.dtype)
    return -(logp * mask).sum() / mask.sum().clamp(min=1)


def warm_start(policy: Policy, task, config: WarmStartConfig, directory: str = "", log=print) -> pathlib.Path | None:
    """Load the cached warm start for this (model, task, config), or train and cache it."""
    if config.steps == 0:
        return None
    path = cache_dir(directory) / f"warmstart-{cache_key(policy.config, task, config, kernels(policy.device))}.pt"
    if path.exists():
        policy.model.load_state_dict(load_state(path))
        log(f"warm start: loaded {path}")
        return path
    tok = policy.tokenizer
    problems = task.problems("demo", config.examples, seed=0)
    pairs = []
    for problem in problems:
        demo = task.demonstration(problem)
        if demo is not None:
            pairs.append((tok.prompt_ids(problem), tok.encode(demo) + [tok.eos_id]))
    if not pairs:
        raise ValueError(f"task '{task.name}' has no demonstrations for a warm start; pass --warmstart-steps 0.")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * (0.1 + 0.9 * (1 - s / config.steps))
    )
    policy.model.train()
    for step in range(config.steps):
        rows = torch.randint(0, len(pairs), (config.batch,), generator=gen).tolist()
        loss = supervised_loss(policy, [pairs[i][0] for i in rows], [pairs[i][1] for i in rows])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % max(1, config.steps // 5) == 0:
            log(f"warm start: step {step + 1}/{config.steps}, demonstration NLL {loss.item():.3f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(policy.model.state_dict(), tmp)
    log(f"warm start: trained in {time.perf_counter() - start:.0f}s, cached at {path}")
    return path
