"""GRPO-style RL on a CPU: sample groups, score them, update with any registered objective.

The loss math comes only from :func:`mhpo.policy_loss`; this module runs the loop. One RL step
is three phases, each a function that takes the previous phase's product and returns its own
with its metrics:

  1. :func:`~mhpo.train.collect.collect`: sample G completions for each prompt (temperature,
     top-p, EOS) and score them (soft overlong punishment, dynamic sampling);
  2. :func:`~mhpo.train.prepare.prepare`: the completions as tensors, the objective's recipe
     (advantages, α, normalisers) and the rollout policy's and KL reference's log-probs;
  3. :func:`~mhpo.train.update.update`: mu passes of mini-batches (one optimizer step each) of
     micro-batches (gradient accumulation that gives the mini-batch's gradient exactly).

The run's parts come from :mod:`~mhpo.train.build`, its directory (lock, configuration,
resume, checkpoints) is :class:`~mhpo.train.rundir.RunDirectory`.
"""

from __future__ import annotations

import pathlib
import random
from typing import Any

import torch

import mhpo

from ..files import cache_dir
from .build import (build_optimizer, build_policy, build_reference, build_task, has_stochastic_forward,
                    load_checked_policy, lora_settings)  # fmt: skip
from .collect import PromptStream, collect
from .config import TrainConfig
from .evaluate import baseline_cache, cached_evaluation, evaluate, start_cache
from .models import Policy, check_model_source
from .prepare import prepare
from .progress import progress
from .rundir import RunDirectory
from .runlog import open_trackers
from .timing import Timer
from .update import GradClip, update


class Trainer:
    """Runs one configuration end to end; ``train()`` returns the per-step records."""

    # Whether a step with nothing to learn skips its forward and backward passes: its gradient
    # is exactly 0 (every policy term is a multiple of A), and the optimizer still steps on it
    # (AdamW's moments decay and the scheduler advances), so the run continues exactly as it
    # would have. Never with a forward pass that draws random numbers (dropout).
    skip_idle_updates = True

    def __init__(self, cfg: TrainConfig, *, policy: Policy | None = None, task=None, log=print) -> None:
        # Everything that can fail is checked before any work: the options, the data, the
        # model's source, the output directory and, on resume, the saved run.
        self.cfg = cfg = cfg.validate().resolved()
        self.log = log
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.spec = mhpo.get_objective(cfg.objective)  # resolved once; every phase is handed the spec
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
            state = self.run_directory.resume_state(cfg, log=log)
            if policy is None:  # a resumed run takes its weights from the checkpoint, not a warm start
                policy, self.warm_start_path = build_policy(cfg, self.task, warm=state is None, log=log, policy=loaded)
            elif cfg.lora_rank and policy.peft is None:
                policy.add_lora(lora_settings(cfg), seed=cfg.seed)
            self.trackers = open_trackers(cfg.reporters(), self.out, cfg.project, cfg.to_dict())
        except BaseException:
            self.run_directory.release()
            raise
        self.policy, self.device = policy, policy.device
        if cfg.gradient_checkpointing:
            policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.reference = build_reference(cfg, policy)
        self.optimizer, self.scheduler = build_optimizer(cfg, policy)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.prompts = PromptStream(self.task, cfg.seed)
        self.clip = GradClip(cfg.max_grad_norm, cfg.relative_clip)
        self.stochastic_forward = has_stochastic_forward(policy.model)
        self.step = 0
        self.metrics_log = self.run_directory.metrics_log()
        if state is not None:
            self._restore(state)
        self.run_directory.write_config(cfg)

    @property
    def grad_norm_history(self) -> list[float]:
        """Pre-clip gradient norms of every optimizer step so far."""
        return self.clip.history

    # ---- one RL step ----------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        cfg, policy, timer = self.cfg, self.policy, Timer(self.device)
        with timer("step"):
            collected, collect_metrics = collect(policy, self.task, self.prompts, cfg, self.generator)
            batch, batch_metrics = prepare(collected, policy, self.reference, self.spec, cfg,
                                           skip_idle=self.skip_idle_updates and not self.stochastic_forward)  # fmt: skip
            update_metrics = update(batch, policy, self.optimizer, self.scheduler, self.clip, self.generator, self.spec, cfg)
        self.step += 1
        generated = sum(len(c) for c in collected.rollout.completions)
        generate_s = collect_metrics["time/generate"]
        return {**collect_metrics, **batch_metrics, **update_metrics, **timer.metrics(), "step": self.step,
                "tokens/rollout_per_s": generated / generate_s if generate_s > 0 else 0.0}  # fmt: skip

    # ---- the run ----------------------------------------------------------------------------
    def train(self) -> list[dict[str, float]]:
        """Run to ``cfg.steps``; the output directory is released when this returns or raises."""
        try:
            return self._train()
        finally:
            for tracker in self.trackers:
                tracker.close()
            self.run_directory.release()

    def _train(self) -> list[dict[str, float]]:
        cfg, records = self.cfg, []
        if self.step == 0:
            records.append(self._record({"step": 0, **self._baseline_evaluation()}))
            self._log_evaluation(records[0])
        with progress(cfg.progress, cfg.steps, self.step) as advance:
            while self.step < cfg.steps:
                record = self.train_step()
                last = self.step == cfg.steps
                if last or (cfg.eval_every and self.step % cfg.eval_every == 0):
                    record.update(self._evaluate())
                records.append(self._record(record))
                if last or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                    self.save()
                advance(record)
        if records and "eval/accuracy" in records[-1]:
            self._log_evaluation(records[-1])
        self.run_directory.mark_done(self.step)
        return records

    def _record(self, record: dict[str, float]) -> dict[str, float]:
        self.metrics_log.append(record)
        for tracker in self.trackers:
            tracker.append(record)
        return record

    def _log_evaluation(self, record: dict[str, float]) -> None:
        self.log(f"step {record['step']}: held-out accuracy {record['eval/accuracy']:.3f}, "
                 f"avg@{self.cfg.eval_k} {record['eval/avg@k']:.3f}")  # fmt: skip

    # ---- evaluation --------------------------------------------------------------------------
    def _baseline_evaluation(self) -> dict[str, float]:
        """Step 0's evaluation, shared through a cache by every run with the same start (the same
        warm start, or the same starting weights)."""
        if self.warm_start_path is not None:
            path = baseline_cache(self.warm_start_path, self.policy, self.task, self.cfg)
        else:
            path = start_cache(cache_dir(self.cfg.cache_dir), self.policy, self.task, self.eval_problems, self.cfg)
        return cached_evaluation(path, self._evaluate)

    def _evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        self.log(f"step {self.step}: evaluating on {len(self.eval_problems)} held-out problems (greedy, and "
                 f"{cfg.eval_k} sample{'s' * (cfg.eval_k > 1)} each for avg@k)")  # fmt: skip
        timer = Timer(self.device)
        with timer("eval"):
            result = evaluate(self.policy, self.task, self.eval_problems, k=cfg.eval_k, temperature=cfg.temperature or 1.0,
                              top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 7919 + self.step)  # fmt: skip
        return {**result, **timer.metrics()}

    # ---- checkpoints -------------------------------------------------------------------------
    def save(self) -> pathlib.Path:
        self.log(f"step {self.step}: writing a checkpoint to {self.run_directory.checkpoints}")
        return self.run_directory.save(self.step, self._state(), keep=self.cfg.keep_checkpoints)

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
            "grad_norm_history": list(self.clip.history),
            "config": self.cfg.to_dict(),
        }

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
        self.clip.history = list(state.get("grad_norm_history", []))
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step = state["step"]
        self.metrics_log.truncate_after(self.step)
        self.log(f"resume: continuing after step {self.step}")
