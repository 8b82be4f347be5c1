"""GRPO-style RL on a CPU: sample groups, score them, update with any registered objective.

The loss math comes only from :func:`mhpo.policy_loss`; this module orchestrates.

One RL step:
  1. take prompts, sample G completions each (temperature, top-p, EOS);
  2. score them (optionally: soft overlong punishment, dynamic sampling);
  3. group-relative advantages; old log-probs once per rollout (and reference log-probs);
  4. mu passes, each split into mini-batches (one optimizer step each), each mini-batch
     split into micro-batches whose losses use the mini-batch's global normalisers, so
     gradient accumulation gives the mini-batch gradient exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import pathlib
import random
import statistics
import time
from typing import Any

import torch

import mhpo

from ..tasks import Arithmetic, ArithmeticConfig, Countdown, CountdownConfig, UserData, UserDataConfig
from .checkpoint import list_checkpoints, load_latest, save_checkpoint
from .config import RESUMABLE, TrainConfig
from .evaluate import evaluate
from .models import LoraSettings, ModelConfig, Policy, check_model_source, load_policy
from .rollout import Rollout, generate, pack, wall_time
from .rundir import RunDirectory
from .runlog import MetricsLog, atomic_write_text, open_trackers, read_metrics
from .warmstart import WarmStartConfig, warm_start

Tensor = torch.Tensor
PROMPT_CHUNK = 1024
RELATIVE_CLIP_WARMUP = 10  # optimizer steps before --relative-clip has a median to go by


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


def warmstart_config(cfg: TrainConfig) -> WarmStartConfig:
    return WarmStartConfig(cfg.warmstart_steps_value(), cfg.warmstart_lr, cfg.warmstart_batch, cfg.warmstart_examples)


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


def _merge_metrics(parts: list[tuple[float, dict[str, Tensor]]]) -> dict[str, float]:
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


@dataclasses.dataclass
class Batch:
    """One scored rollout batch as tensors."""

    sequences: Tensor  # (B, P + C)
    attention: Tensor  # (B, P + C)
    width: int  # P
    mask: Tensor  # (B, C) counted completion tokens
    rewards: Tensor  # (B,)
    advantages: Tensor  # (B,)
    alpha: Tensor | None  # the batch's hysteretic weight, None = off
    old_logp: Tensor | None = None  # (B, C)
    ref_logp: Tensor | None = None  # (B, C)


class Trainer:
    """Runs one configuration end to end; ``train()`` returns the per-step records."""

    def __init__(self, cfg: TrainConfig, *, policy: Policy | None = None, task=None, log=print) -> None:
        # Everything that can fail is checked before any work: the options, the data, the
        # model's source, the output directory and, on resume, the saved run.
        self.cfg = cfg = cfg.validate().resolved()
        self.log = log
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.task = task if task is not None else build_task(cfg)
        self.eval_problems = self.task.problems("eval", cfg.eval_size, seed=0)
        loaded = None
        if policy is None:
            check_model_source(cfg.model)
            loaded = load_checked_policy(cfg, self.task, log=log)
        self.out = pathlib.Path(cfg.output_dir)
        self.warm_start_path: pathlib.Path | None = None
        self.run_directory = RunDirectory(self.out)
        try:
            state = self._saved_state()
            if policy is None:  # a resumed run takes its weights from the checkpoint, not a warm start
                policy, self.warm_start_path = build_policy(cfg, self.task, warm=state is None, log=log, policy=loaded)
            elif cfg.lora_rank and policy.peft is None:
                policy.add_lora(lora_settings(cfg), seed=cfg.seed)
            self.trackers = open_trackers(cfg.reporters(), self.out, cfg.project, cfg.to_dict())
        except BaseException:
            self.run_directory.release()
            raise
        self.policy = policy
        self.device = policy.device
        if cfg.gradient_checkpointing:
            policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # The KL reference is the starting policy: with LoRA, the model with its adapters
        # disabled; otherwise a frozen copy.
        self.reference = None
        if cfg.beta > 0 and policy.peft is None:
            self.reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            [p for p in policy.model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99)
        )
        warmup = max(cfg.warmup_steps, 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.prompts = PromptStream(self.task, cfg.seed)
        self.step = 0
        self.grad_norm_history: list[float] = []  # pre-clip norms of every optimizer step so far
        self.metrics_log = MetricsLog(self.out / "metrics.jsonl")
        if state is not None:
            self._restore(state)
        atomic_write_text(self.out / "config.yaml", _yaml(cfg.to_dict()))

    # ---- checkpointing ---------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.policy.model.state_dict(),
            "reference": self.reference.state_dict() if self.reference is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "prompt_position": self.prompts.position,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "grad_norm_history": list(self.grad_norm_history),
            "config": self.cfg.to_dict(),
        }

    def _saved_state(self) -> dict[str, Any] | None:
        """What the output directory holds, checked against this configuration: the latest
        checkpoint's state to resume from, or None to start at step 0. Raises ValueError for
        a fresh start over an earlier run, for a resume with another configuration, and when
        no checkpoint can be read; nothing is deleted."""
        cfg, out = self.cfg, self.out
        metrics = out / "metrics.jsonl"
        earlier = bool(list_checkpoints(out / "checkpoints")) or bool(read_metrics(metrics))
        if not cfg.resume:
            if earlier:
                raise ValueError(
                    f"{out} holds an earlier run; pass --resume to continue it, or choose another --output-dir "
                    "(nothing was overwritten)."
                )
            return None
        state = load_latest(out / "checkpoints", log=self.log)
        if (out / "config.yaml").exists():
            import yaml

            saved = yaml.safe_load((out / "config.yaml").read_text())
        else:  # config.yaml lost: the checkpoint carries the configuration too
            saved = state["config"] if state is not None else None
        changes = cfg.changes_from(saved) if saved else []
        if changes:
            raise ValueError(
                f"cannot resume {out} with another configuration; only {', '.join(RESUMABLE)} may change. "
                "Differences:\n    " + "\n    ".join(changes) + "\n  Resume with the saved options "
                f"(mhpo train --config {out / 'config.yaml'} --resume), or choose another --output-dir."
            )
        if state is None:
            if metrics.exists():  # interrupted before its first checkpoint: start again, keep the old log
                kept = out / f"metrics.jsonl.before-restart-{time.strftime('%Y%m%d-%H%M%S')}"
                metrics.rename(kept)
                self.log(f"resume: no checkpoint in {out / 'checkpoints'}; starting from step 0 (earlier log kept as {kept.name})")
            return None
        if state["step"] > cfg.steps:
            raise ValueError(f"{out} has already run {state['step']} steps; ask for --steps >= {state['step']} to resume it.")
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.policy.model.load_state_dict(state["model"])
        if self.reference is not None and state["reference"] is not None:
            self.reference.load_state_dict(state["reference"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        try:
            self.generator.set_state(state["generator"])
        except (RuntimeError, TypeError):  # saved on another kind of device: its sampling stream cannot continue
            self.generator.manual_seed(self.cfg.seed * 1_000_003 + state["step"])
            self.log(f"resume: the sampling generator was saved on another device; reseeded for {self.device}")
        self.prompts.position = state["prompt_position"]
        self.grad_norm_history = list(state.get("grad_norm_history", []))
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step = state["step"]
        self.metrics_log.truncate_after(self.step)
        self.log(f"resume: continuing after step {self.step}")

    def save(self) -> pathlib.Path:
        self.log(f"step {self.step}: writing a checkpoint to {self.out / 'checkpoints'}")
        return save_checkpoint(self.out / "checkpoints", self.step, self._state(), keep=self.cfg.keep_checkpoints)

    # ---- one RL step ----------------------------------------------------------------------
    def _sample_groups(self, problems: list) -> tuple[Rollout, list[float]]:
        tok, cfg = self.policy.tokenizer, self.cfg
        prompts = [tok.prompt_ids(p) for p in problems for _ in range(cfg.group_size)]
        rollout = generate(self.policy, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                           top_p=cfg.top_p, generator=self.generator)  # fmt: skip
        owners = [p for p in problems for _ in range(cfg.group_size)]
        return rollout, owners

    def _collect(self, stats: dict[str, float]) -> tuple[Rollout, Tensor]:
        """Sample, score and (with dynamic sampling) keep only informative groups."""
        cfg = self.cfg
        groups_needed, G = cfg.prompts_per_step, cfg.group_size
        dynamic = cfg.preset("dynamic_sampling")
        buffer = cfg.preset("overlong_buffer")
        kept: list[Rollout] = []
        kept_rewards: list[Tensor] = []
        rounds = generate_time = score_time = 0.0
        raw_rewards: list[float] = []
        zero_variance = total_groups = 0
        last = None
        parts_of = getattr(self.task, "score_parts", None)
        reward_parts: dict[str, list[float]] = {}
        while sum(len(r) for r in kept) < groups_needed * G and rounds < (cfg.dynamic_sampling_rounds if dynamic else 1):
            rounds += 1
            need = groups_needed - sum(len(r) for r in kept) // G
            start = time.perf_counter()
            rollout, owners = self._sample_groups(self.prompts.take(need))
            generate_time += time.perf_counter() - start
            start = time.perf_counter()
            if parts_of is not None:  # several reward functions: each is logged on its own
                scored = [parts_of(text, p) for text, p in zip(rollout.texts, owners)]
                task_rewards = [total for total, _ in scored]
                for _, parts in scored:
                    for name, value in parts.items():
                        reward_parts.setdefault(name, []).append(value)
            else:
                task_rewards = [self.task.score(text, p) for text, p in zip(rollout.texts, owners)]
            rewards = torch.tensor(
                [r + overlong_penalty(len(c), cfg.max_new_tokens, buffer) for r, c in zip(task_rewards, rollout.completions)],
                dtype=torch.float32, device="cpu",  # host-side bookkeeping; the batch moves to the device
            )
            score_time += time.perf_counter() - start
            raw_rewards += task_rewards
            grouped = rewards.view(-1, G)
            constant = (grouped.amax(-1) == grouped.amin(-1)).tolist()
            zero_variance += sum(constant)
            total_groups += len(constant)
            last = (rollout, rewards)
            keep = [g for g, c in enumerate(constant) if not (dynamic and c)]
            rows = [g * G + j for g in keep for j in range(G)]
            if rows:
                kept.append(rollout.select(rows))
                kept_rewards.append(rewards[rows])
        if not kept:  # dynamic sampling found no informative group: train on the last round (A = 0)
            kept, kept_rewards = [last[0]], [last[1]]
        rollout = Rollout.concat(kept)
        rewards = torch.cat(kept_rewards)[: groups_needed * G]
        rollout = rollout.select(list(range(len(rewards))))
        raw = torch.tensor(raw_rewards, device="cpu")
        stats.update({
            "reward/mean": raw.mean().item(),
            "reward/std": raw.std().item() if raw.numel() > 1 else 0.0,
            "reward/shaped_mean": rewards.mean().item(),
            "reward/zero_variance_frac": zero_variance / max(total_groups, 1),
            "time/generate": generate_time,
            "time/prefill": rollout.prefill_s,  # of the completions kept (the last round's, with dynamic sampling)
            "time/decode": rollout.decode_s,
            "time/score": score_time,
            "sampling/rounds": rounds,
            "sampling/groups": len(rewards) // G,
        })  # fmt: skip
        stats.update({f"reward_fn/{name}": sum(v) / len(v) for name, v in reward_parts.items()})
        return rollout, rewards

    def _batch(self, rollout: Rollout, rewards: Tensor, stats: dict[str, float]) -> Batch:
        cfg = self.cfg
        sequences, attention, width, mask = pack(rollout.prompts, rollout.completions, self.policy.tokenizer.pad_id,
                                                 self.device)  # fmt: skip
        rewards = rewards.to(self.device)
        truncated = torch.tensor(rollout.truncated, device=self.device)
        lengths = mask.sum(-1).float()
        stats.update({
            "length/prompt_mean": sum(len(p) for p in rollout.prompts) / len(rollout.prompts),
            "length/mean": lengths.mean().item(),
            "length/max": lengths.max().item(),
            "length/truncated_frac": truncated.float().mean().item(),
        })  # fmt: skip
        if cfg.preset("overlong_filter"):
            mask = mask * (~truncated).long().unsqueeze(-1)
            attention = attention.clone()
            attention[:, width:] = mask
        # The objective's recipe for the whole rollout batch: advantages at its scale and its α.
        prepared = mhpo.prepare_rollout(cfg.objective, rewards, mask, group_size=cfg.group_size,
                                        advantage_scale=cfg.advantage_scale, hysteresis=cfg.hysteresis,
                                        alpha_min=cfg.alpha_min, max_length=cfg.max_new_tokens)  # fmt: skip
        return Batch(sequences, attention, width, mask, rewards, prepared.advantages, prepared.hysteresis)

    @torch.no_grad()
    def _logprobs(self, batch: Batch, *, reference: bool = False) -> Tensor:
        """Log-probs of the batch's completions under the policy, or under the KL reference."""
        if reference and self.reference is None:  # LoRA: the base model is the reference
            with self.policy.adapter_disabled():
                return self._logprobs(batch)
        parts = []
        for rows in torch.arange(batch.sequences.shape[0], device=self.device).split(self.cfg.micro_batch_size):
            logp, _ = self.policy.completion_logprobs(
                batch.sequences[rows], batch.attention[rows], batch.width, model=self.reference if reference else None,
                share_prompts=self.cfg.share_prompts,
            )
            parts.append(logp)
        return torch.cat(parts)

    # Whether a step with nothing to learn skips its forward and backward passes (see _idle).
    skip_idle_updates = True

    def _idle(self, batch: Batch) -> bool:
        """A step whose every advantage is 0, with no KL or entropy term, has a gradient of
        exactly 0: every policy term is a multiple of A. Its forward and backward passes can
        be skipped, while the optimizer still steps on that zero gradient (AdamW's moments decay
        and the scheduler advances), so the run continues exactly as it would have. Not with a
        forward pass that draws random numbers (dropout), whose stream would then move on."""
        cfg = self.cfg
        if not hasattr(self, "_stochastic_forward"):  # the model's dropout does not change: look once
            model = self.policy.model
            self._stochastic_forward = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()) or bool(
                getattr(model.config, "attention_dropout", 0.0))  # fmt: skip
        return (self.skip_idle_updates and cfg.beta == 0 and cfg.entropy_coef == 0 and not self._stochastic_forward
                and not bool(batch.advantages.any()))  # fmt: skip

    def _update(self, batch: Batch, stats: dict[str, float]) -> None:
        cfg = self.cfg
        start = clock = self._clock()
        on_policy = cfg.mu == 1 and cfg.minibatches == 1
        idle = self._idle(batch)
        stats["update/skipped"] = float(idle)
        if not on_policy and not idle:
            batch.old_logp = self._logprobs(batch)
        stats["time/old_logp"], clock = self._clock() - clock, self._clock()
        if cfg.beta > 0:  # (never idle)
            batch.ref_logp = self._logprobs(batch, reference=True)
        stats["time/ref_logp"], clock = self._clock() - clock, self._clock()
        phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        hp = dict(cfg.hp)
        grad_norms, thresholds, losses, parts = [], [], [], []
        rows_all = batch.sequences.shape[0]
        tokens = 0
        self.policy.model.train()
        for _ in range(cfg.mu):
            order = torch.randperm(rows_all, generator=self.generator, device=self.device)
            for minibatch in order.tensor_split(cfg.minibatches):
                if minibatch.numel() == 0:
                    continue
                if cfg.share_prompts:  # a group's rows side by side, so that micro-batches share their prompt
                    minibatch = minibatch.sort().values
                norms = mhpo.global_normalisers(batch.mask[minibatch], max_length=cfg.max_new_tokens)
                minibatch_loss = 0.0
                if idle:
                    for parameter in self.policy.model.parameters():
                        if parameter.requires_grad:
                            parameter.grad = torch.zeros_like(parameter)
                for rows in [] if idle else minibatch.split(cfg.micro_batch_size):
                    clock = self._clock()
                    mask = batch.mask[rows]
                    logp, entropy = self.policy.completion_logprobs(
                        batch.sequences[rows], batch.attention[rows], batch.width,
                        with_entropy=True, differentiable_entropy=cfg.entropy_coef != 0, share_prompts=cfg.share_prompts,
                    )  # fmt: skip
                    old = batch.old_logp[rows] if batch.old_logp is not None else logp.detach()
                    out = mhpo.policy_loss(
                        cfg.objective, logp, old, batch.advantages[rows], mask,
                        aggregation=cfg.aggregation,
                        ref_logp=batch.ref_logp[rows] if batch.ref_logp is not None else None,
                        beta=cfg.beta, kl_estimator=cfg.kl_estimator,
                        hysteresis=batch.alpha, entropy=entropy, entropy_coef=cfg.entropy_coef,
                        **norms, **hp,
                    )  # fmt: skip
                    phases["forward"], clock = phases["forward"] + self._clock() - clock, self._clock()
                    out.loss.backward()
                    phases["backward"], clock = phases["backward"] + self._clock() - clock, self._clock()
                    minibatch_loss += out.loss.item()
                    tokens += int(mask.sum())
                    parts.append((float(mask.sum()), out.metrics))
                clock = self._clock()
                threshold = self._clip_threshold()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.model.parameters(), threshold))
                grad_norms.append(grad_norm)
                thresholds.append(threshold)
                self.grad_norm_history.append(grad_norm)
                losses.append(minibatch_loss)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                phases["optimizer"] += self._clock() - clock
        elapsed = self._clock() - start
        stats.update({f"time/{name}": value for name, value in phases.items()})
        if cfg.relative_clip is not None:
            stats["grad_norm/threshold"] = min(thresholds, default=math.inf)
        stats.update(_merge_metrics(parts))
        stats.update({
            "loss": sum(losses) / max(len(losses), 1),
            "grad_norm/mean": sum(grad_norms) / max(len(grad_norms), 1),
            "grad_norm/max": max(grad_norms, default=0.0),
            # the share of optimizer steps whose gradient the threshold actually shrank
            "grad_norm/clipped_frac": sum(n > t for n, t in zip(grad_norms, thresholds)) / max(len(grad_norms), 1),
            "lr": self.scheduler.get_last_lr()[0],
            "time/update": elapsed,
            "tokens/update_per_s": tokens / elapsed if elapsed > 0 else 0.0,
        })  # fmt: skip

    def _clock(self) -> float:
        return wall_time(self.device)

    def _clip_threshold(self) -> float:
        """The clipping norm of the next optimizer step: --max-grad-norm, and with
        --relative-clip K at most K times the median pre-clip norm of the run's earlier steps."""
        threshold = self.cfg.max_grad_norm
        # Steps with no gradient at all (every group's rewards equal, as often at the start of
        # sparse-reward training) say nothing about the scale of a gradient: counted, their zeros
        # would pull the median to 0 and every later update would be scaled to nothing.
        informative = [n for n in self.grad_norm_history if n > 0]
        if self.cfg.relative_clip is not None and len(informative) >= RELATIVE_CLIP_WARMUP:
            threshold = min(threshold, self.cfg.relative_clip * statistics.median(informative))
        return threshold

    def _baseline_evaluation(self) -> dict[str, float]:
        """Step 0's evaluation. It depends only on the warm start and the evaluation options
        (not on the objective), so every run of a study that shares them reuses one result,
        cached as JSON next to the warm start. Evaluation draws from its own seeded generator,
        so skipping it leaves training unchanged."""
        if self.warm_start_path is None:
            return self._evaluate()
        cfg = self.cfg
        task_config = getattr(self.task, "config", None)
        identity = {
            "version": 1,
            "warm_start": self.warm_start_path.name,
            "task": [self.task.name, dataclasses.asdict(task_config) if dataclasses.is_dataclass(task_config) else None],
            "evaluation": [cfg.eval_size, cfg.eval_k, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed, cfg.dtype],
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        path = self.warm_start_path.with_name(f"eval0-{digest}.json")
        try:
            return {**json.loads(path.read_text()), "time/eval": 0.0}
        except (OSError, ValueError):  # not cached yet, or a damaged file: evaluate
            result = self._evaluate()
            try:
                atomic_write_text(path, json.dumps(result, sort_keys=True))
            except OSError:  # a read-only cache costs time, not correctness
                pass
            return result

    def _evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        self.log(f"step {self.step}: evaluating on {len(self.eval_problems)} held-out problems (greedy, and "
                 f"{cfg.eval_k} sample{'s' * (cfg.eval_k > 1)} each for avg@k)")  # fmt: skip
        start = time.perf_counter()
        result = evaluate(self.policy, self.task, self.eval_problems, k=cfg.eval_k, temperature=cfg.temperature or 1.0,
                          top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 7919 + self.step)  # fmt: skip
        result["time/eval"] = time.perf_counter() - start
        return result

    def train_step(self) -> dict[str, float]:
        start = time.perf_counter()
        stats: dict[str, float] = {}
        rollout, rewards = self._collect(stats)
        generated = sum(len(c) for c in rollout.completions)
        batch = self._batch(rollout, rewards, stats)
        self._update(batch, stats)
        self.step += 1
        stats["step"] = self.step
        stats["time/step"] = time.perf_counter() - start
        stats["tokens/rollout_per_s"] = generated / stats["time/generate"] if stats["time/generate"] > 0 else 0.0
        return stats

    def _record(self, record: dict[str, float]) -> None:
        self.metrics_log.append(record)
        for tracker in self.trackers:
            tracker.append(record)

    def train(self) -> list[dict[str, float]]:
        """Run to ``cfg.steps``; the output directory is released when this returns or raises."""
        try:
            return self._train()
        finally:
            for tracker in self.trackers:
                tracker.close()
            self.run_directory.release()

    def _train(self) -> list[dict[str, float]]:
        cfg = self.cfg
        records = []
        if self.step == 0:
            baseline = {"step": 0, **self._baseline_evaluation()}
            self._record(baseline)
            records.append(baseline)
            self.log(f"step 0: held-out accuracy {baseline['eval/accuracy']:.3f}, avg@{cfg.eval_k} {baseline['eval/avg@k']:.3f}")
        with _progress(cfg.progress, cfg.steps, self.step) as advance:
            while self.step < cfg.steps:
                record = self.train_step()
                last = self.step == cfg.steps
                if last or (cfg.eval_every and self.step % cfg.eval_every == 0):
                    record.update(self._evaluate())
                self._record(record)
                records.append(record)
                if last or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                    self.save()
                advance(record)
        final = records[-1] if records else {}
        if "eval/accuracy" in final:
            self.log(f"step {self.step}: held-out accuracy {final['eval/accuracy']:.3f}, avg@{cfg.eval_k} {final['eval/avg@k']:.3f}")
        atomic_write_text(self.out / "done", f"{self.step}\n")
        return records


class _progress:
    """A rich progress bar with reward, loss, grad norm and tokens/s, or nothing."""

    def __init__(self, enabled: bool, total: int, completed: int) -> None:
        self.enabled, self.total, self.completed = enabled, total, completed

    def __enter__(self):
        if not self.enabled:
            return lambda record: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]RL"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), transient=False)  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task("train", total=self.total, completed=self.completed, info="")

        def advance(record):
            info = (f"reward {record['reward/mean']:.3f}  loss {record['loss']:+.4f}  "
                    f"grad {record['grad_norm/max']:.2f}  {record['tokens/rollout_per_s']:.0f} tok/s")  # fmt: skip
            self.bar.update(self.task, advance=1, info=info)

        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False


def _yaml(values: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)
