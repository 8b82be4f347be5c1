"""`mhpo compare`: every objective on every seed, from one warm start, on the same prompts."""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import pathlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import mhpo

from ..train.config import TrainConfig
from ..train.models import load_policy
from ..train.runlog import atomic_write_text
from ..train.build import build_task, model_config, warmstart_config
from ..train.rundir import saved_config
from ..train.trainer import Trainer
from ..train.warmstart import warm_start
from .report import build_report
from .runs import VARIANT_OPTIONS


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``mhpo@use_dhp=false@c=2`` -> ("mhpo", {"use_dhp": False, "c": 2}). Keys in
    ``VARIANT_OPTIONS`` are trainer options rather than hyperparameters; `split_options`
    separates them."""
    import yaml

    name, *assignments = text.strip().split("@")
    hp = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"objective variant '{text}': expected NAME@KEY=VALUE.")
        hp[key] = yaml.safe_load(value)
    objective_hp, _ = split_options(hp)
    mhpo.get_objective(name).make_config(**objective_hp)  # fail early on a typo
    return name, hp


def split_options(hp: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(objective hyperparameters, trainer options) of a parsed variant."""
    options = {k: v for k, v in hp.items() if k in VARIANT_OPTIONS}
    if "hysteresis" in options:
        options["hysteresis"] = str(options["hysteresis"])  # TrainConfig keeps "adaptive" or a number as text
    return {k: v for k, v in hp.items() if k not in VARIANT_OPTIONS}, options


def run_directory(root: pathlib.Path, variant: str, seed: int) -> pathlib.Path:
    safe = variant.replace("@", "__").replace("=", "-")
    return root / "runs" / f"{safe}-seed{seed}"


def run_one(config: dict[str, Any]) -> tuple[str, float]:
    """One run in a worker process; resumes from its checkpoint if one exists. A finished run
    is skipped, unless more steps are asked for than it ran: then it continues (the learning
    rate is constant after warm-up, so a run extended from N to M steps trains as the M-step
    run would; the evaluation at its old last step stays in the log)."""
    import torch

    torch.set_num_threads(max(1, config.get("threads") or 1))
    cfg = TrainConfig.from_dict(config)
    directory = pathlib.Path(cfg.output_dir)
    done = directory / "done"
    if done.exists():
        if int(done.read_text().split()[0]) >= cfg.steps:
            return cfg.output_dir, 0.0
        done.unlink()
    cfg.resume = True  # continue what is there (compare checked it is this configuration), else start
    start = time.perf_counter()
    Trainer(cfg, log=lambda *args: None).train()
    return cfg.output_dir, time.perf_counter() - start


def check_existing_runs(configs: list[TrainConfig]) -> None:
    """Refuse, before any work, to continue runs that were made with other options: a study
    rerun with another task or learning rate must not silently reuse the old runs. More steps
    than a run has are allowed (it is extended); fewer are not (it would be reported as is)."""
    from ..train.config import RESUMABLE

    problems = []
    for cfg in configs:
        try:
            saved = saved_config(cfg.output_dir)
        except ValueError as error:
            problems.append(f"{cfg.output_dir}: {error}")
            continue
        if saved is None:
            continue
        changes = cfg.changes_from(saved)
        if int(saved.get("steps", 0)) > cfg.steps:
            changes.append(f"steps: saved {saved['steps']}, now {cfg.steps} (a run is extended, never cut)")
        problems += [f"{cfg.output_dir}: {change}" for change in changes]
    if problems:
        raise ValueError(
            f"the study directory already holds runs made with other options (only {', '.join(RESUMABLE)} may "
            "change, steps only upwards):\n    " + "\n    ".join(problems[:20])
            + (f"\n    ... and {len(problems) - 20} more" if len(problems) > 20 else "")
            + "\n  Use another --out for this study, or rerun with the original options."
        )


def record_invocation(study: str | pathlib.Path, wall_s: float, **fields: Any) -> None:
    """Append one invocation's wall time (and what it ran) to ``study/timing.json``, atomically."""
    path = pathlib.Path(study) / "timing.json"
    timing = json.loads(path.read_text()) if path.exists() else {"invocations": []}
    timing["invocations"].append({**fields, "wall_s": round(wall_s, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    atomic_write_text(path, json.dumps(timing, indent=1) + "\n")


def machine() -> str:
    """The CPU and the torch build a study ran on. A run's float rounding depends on them (the
    kernels differ between instruction sets), and over many steps so does its trajectory."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, torch {torch.__version__} with {torch.backends.cpu.get_cpu_capability()} kernels"


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _unless_late(func: Callable[[Any], Any], start_by: float, item: Any) -> Any:
    return None if time.time() > start_by else func(item)


def run_parallel(func: Callable[[Any], Any], items: list[Any], jobs: int, *, start_by: float | None = None) -> Iterator[Any]:
    """Yield ``func(item)`` for every item, in the order they finish, from ``jobs`` spawned
    worker processes. When the caller stops early (an exception in a run, Ctrl-C, or SIGTERM
    to this process alone, which is turned into SystemExit while the pool runs) the workers
    are terminated instead of being left running; each run resumes from its last checkpoint
    next time. With ``start_by`` (a ``time.time()``), an item not started by then is not
    started at all and yields None: the runs going then finish, so a session of limited length
    ends between runs instead of losing the ones it interrupts."""
    if start_by is not None:
        func = functools.partial(_unless_late, func, start_by)
    context = multiprocessing.get_context("spawn")
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        # maxtasksperchild=1: each run gets a fresh process, so memory does not accumulate.
        with context.Pool(jobs, maxtasksperchild=1) as pool:  # __exit__ terminates the workers
            yield from pool.imap_unordered(func, items)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def compare(
    base: TrainConfig,
    variants: list[str],
    seeds: int,
    out: str | pathlib.Path,
    *,
    jobs: int = 2,
    threshold: float = 0.3,
    log=print,
) -> pathlib.Path:
    """Run each objective variant on seeds 0..seeds-1 and write ``out/report.md``."""
    out = pathlib.Path(out)
    parsed = [parse_variant(v) for v in variants]
    if seeds < 1:
        raise ValueError("--seeds must be >= 1.")
    base.validate()
    start = time.perf_counter()
    configs = []
    for (name, hp), variant in zip(parsed, variants):
        objective_hp, options = split_options(hp)
        for seed in range(seeds):
            cfg = dataclasses.replace(
                base, objective=name, hp={**base.hp, **objective_hp}, seed=seed, **options,
                output_dir=str(run_directory(out, variant, seed)), progress=False, threads=1 if jobs > 1 else base.threads,
            )  # fmt: skip
            configs.append(cfg.validate())
    check_existing_runs(configs)
    configs = [cfg.to_dict() for cfg in configs]
    # The warm start is trained (or found in the cache) once, here, before any worker starts.
    policy = load_policy(model_config(base), seed=0)
    warm_start(policy, build_task(base), warmstart_config(base), base.cache_dir, log=log)
    del policy
    log(f"compare: {len(configs)} runs ({len(variants)} objectives x {seeds} seeds), {jobs} at a time")
    results = run_parallel(run_one, configs, jobs) if jobs > 1 else map(run_one, configs)
    for done, (directory, seconds) in enumerate(results, 1):
        log(f"compare: [{done}/{len(configs)}] {directory} ({seconds:.0f}s)")
    elapsed = time.perf_counter() - start
    notes = (
        f"Task `{base.task}`, model `{base.model}`, {base.steps} RL steps of {base.batch_size} completions "
        f"(G = {base.group_size}), mu = {base.mu}, lr = {base.lr}; warm start: {base.warmstart_steps_value()} SFT steps. "
        f"Wall time {elapsed / 60:.1f} min with {jobs} parallel runs. Machine: {machine()}."
    )
    report = build_report([out / "runs"], out, threshold=threshold, order=variants, notes=notes)
    log(f"compare: report at {report} ({elapsed / 60:.1f} min)")
    return report
