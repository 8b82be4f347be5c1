"""A run's parts before RL: the task, the policy (loaded, checked, warm-started, with its LoRA
adapters), the KL reference and the optimizer."""

from __future__ import annotations

import copy
import pathlib

import torch

from ..tasks import Arithmetic, ArithmeticConfig, Countdown, CountdownConfig, UserData, UserDataConfig
from .config import TrainConfig
from .models import LoraSettings, ModelConfig, Policy, load_policy
from .warmstart import WarmStartConfig, warm_start


def build_task(cfg: TrainConfig):
    if cfg.task == "countdown":
        return Countdown(CountdownConfig(cfg.num_numbers, cfg.max_number, cfg.max_target, cfg.operators,
                                         format_reward=cfg.format_reward))  # fmt: skip
    if cfg.task == "arithmetic":
        return Arithmetic(ArithmeticConfig(cfg.num_operands, cfg.max_operand, cfg.operators.replace("/", ""), cfg.answer_format))
    return UserData(UserDataConfig(cfg.data_path, cfg.prompt_field, cfg.answer_field, eval_path=cfg.eval_data_path,
                                   reward_fn=tuple(cfg.reward_fn), reward_weights=tuple(cfg.reward_weights)))  # fmt: skip


def model_config(cfg: TrainConfig) -> ModelConfig:
    """The model options of a configuration, with ``auto`` device and dtype resolved for this
    machine (as the trainer resolves them, so that a warm start made here is the runs' own)."""
    if "auto" in (cfg.device, cfg.dtype):
        cfg = cfg.resolved()
    return ModelConfig(cfg.model, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size, cfg.dtype,
                       device=cfg.device)  # fmt: skip


def lora_settings(cfg: TrainConfig) -> LoraSettings | None:
    if not cfg.lora_rank:
        return None
    return LoraSettings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)


def warmstart_config(cfg: TrainConfig) -> WarmStartConfig:
    return WarmStartConfig(cfg.warmstart_steps_value(), cfg.warmstart_lr, cfg.warmstart_batch, cfg.warmstart_examples)


def build_policy(cfg: TrainConfig, task=None, *, warm: bool = True, log=print,
                 policy: Policy | None = None) -> tuple[Policy, pathlib.Path | None]:  # fmt: skip
    """The policy of a run before RL: loaded (or built; or ``policy``, as loaded and checked
    by :func:`load_checked_policy`), warm-started if ``warm`` and the configuration asks for
    it, then given its LoRA adapters. Returns the policy and the warm start's cache file
    (None without one)."""
    task = task if task is not None else build_task(cfg)
    policy = policy if policy is not None else load_checked_policy(cfg, task, log=log)
    path = warm_start(policy, task, warmstart_config(cfg), cfg.cache_dir, log=log) if warm else None
    if cfg.lora_rank:
        policy.add_lora(lora_settings(cfg), seed=cfg.seed)
    return policy, path


def load_checked_policy(cfg: TrainConfig, task, *, log=print) -> Policy:
    """The model as loaded, once the task's prompts and the LoRA options are known to suit it:
    every prompt leaves --max-new-tokens of its context, and the adapter can be what it says."""
    if cfg.model != "tiny":
        log(f"model: loading {cfg.model}")
    policy = load_policy(model_config(cfg), seed=0, system_prompt=cfg.system_prompt)
    all_problems = getattr(task, "all_problems", None)
    problems = all_problems() if all_problems is not None else task.problems("eval", 1, seed=0)
    if len(problems) > 1000:
        log(f"data: checking that the {len(problems):,} prompts fit the model's context")
    policy.check_prompts(problems, cfg.max_new_tokens)  # also: a conversation without a chat template
    if cfg.lora_rank:
        policy.check_lora(lora_settings(cfg))
    return policy


def build_reference(cfg: TrainConfig, policy: Policy) -> torch.nn.Module | None:
    """The KL reference is the starting policy: with LoRA, the model with its adapters disabled
    (None here; see :meth:`Policy.adapter_disabled`); otherwise a frozen copy. None without KL."""
    if cfg.beta > 0 and policy.peft is None:
        return copy.deepcopy(policy.model).eval().requires_grad_(False)
    return None


def build_optimizer(cfg: TrainConfig, policy: Policy):
    """AdamW over the trainable parameters, with a linear warm-up of the learning rate."""
    optimizer = torch.optim.AdamW(
        [p for p in policy.model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99)
    )
    warmup = max(cfg.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
    return optimizer, scheduler


def has_stochastic_forward(model: torch.nn.Module) -> bool:
    """Whether the model's forward pass draws random numbers (dropout)."""
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()) or bool(
        getattr(model.config, "attention_dropout", 0.0))  # fmt: skip
