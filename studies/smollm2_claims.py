"""The papers' claims on a real pretrained model: SmolLM2-135M-Instruct, paired by seed.

    .venv/bin/python studies/smollm2_claims.py --part pilot     # base rates, LoRA against full, learning rates
    .venv/bin/python studies/smollm2_claims.py --part main      # the claims: 5 seeds per cell
    .venv/bin/python studies/smollm2_claims.py --part main --from-docs   # rebuild its tables from the CSVs

The pilot chooses the main runs' setting and says what they can detect:

- ``base``: the base model on candidate tasks (greedy accuracy and sampled reward on the
  held-out problems, no training), for a task where it starts below about 10% reward (A-HPO's
  claim is about early learning in sparse-reward training);
- ``full`` and ``lora-*``: GRPO with full fine-tuning at the learning rate of the earlier
  SmolLM2 study against LoRA (rank 16, all linear layers) at two learning rates, 2 seeds x 20
  steps each, paired by seed: does the cheaper configuration learn as full training does?
- ``stress-*``: GRPO with full fine-tuning (what the main runs use, chosen from the pieces
  above) at mu = 4 (four passes over each batch, so most updates are off-policy) at two
  learning rates, 10 steps, for the stress regime where GRPO degrades;
- ``sparse-*``: GRPO with full fine-tuning on sparse-reward candidates: does it learn there
  within the runs' length?

The main part (``MAIN``) runs GRPO, MHPO, DAPO and M2PO in the standard and the stress regime
(MHPO's claims: accuracy and stability) and GRPO, HPO and A-HPO on the sparse task (A-HPO's
claim: reward per update early in training), 5 seeds each; ``claims.md`` gives every pair's
difference with a verdict by a rule fixed before the runs (``verdict``).

Every run uses the controls study's relative gradient clipping (no fixed threshold; a step is
clipped at 3x the median norm of the run's earlier steps), float32 with ATen's and MKL's
kernels pinned to AVX2 on x86-64 (unless ATEN_CPU_CAPABILITY or MKL_CBWR is set), and evaluates 200
held-out problems at its start (once per starting weights: the objectives of a seed share it)
and at its end. Runs go two at a time (one thread each) from one queue.

Each part runs at one version of mhpo: its first invocation records a fingerprint of the
installed package's source in ``code.json`` (in the study directory and beside the published
runs), and a later invocation with other code refuses to continue. Every finished run is
published at once to docs/results/smollm2_claims/<part>/<piece>/ (its rows in the compact
``runs.csv``, its configuration and the machine that ran it in ``runs.json``): that is the
study's lasting record, so a study spread over several sessions, or machines, skips what is
published and resumes an interrupted run from its checkpoint where the study directory is
still there. ``--hours`` starts no run after that many hours, for a session of limited
length. ``--from-docs`` (or ``mhpo report <csv>``) rebuilds the reports and tables from the
published CSVs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__" and platform.machine().lower() in ("x86_64", "amd64"):
    # ATen's and MKL's kernels pinned to AVX2 before torch loads (its workers inherit this), as
    # `make run` does: the study spans sessions on CPUs whose native kernels round differently
    # (AVX2 only, AVX-512), and pinned, any x86-64 CPU with AVX2 computes the same runs.
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("MKL_CBWR", "AVX2")

import mhpo
from mhpo.files import atomic_write_text
from mhpo.objectives.mhpo import MHPOConfig
from mhpo.study.compare import run_one, check_existing_runs, machine, record_invocation, run_directory, run_parallel
from mhpo.study.report import build_report
from mhpo.study.runs import export_csv, find_runs, load_csv, run_label
from mhpo.study.stats import mean_ci
from mhpo.study.summary import format_ci, summarise
from mhpo.train.config import NOT_IDENTITY, TrainConfig
from mhpo.train.rundir import saved_config

HERE = Path(__file__).resolve().parent
BASE = {
    "model": "smollm2-135m", "task": "arithmetic", "num_operands": 2, "max_operand": 20, "operators": "+-",
    "answer_format": "number", "batch_size": 32, "group_size": 8, "mu": 1, "minibatches": 2,
    "micro_batch_size": 16, "max_new_tokens": 32, "temperature": 0.8, "lr": 1e-5, "warmup_steps": 2,
    "eval_every": 0, "eval_size": 200, "eval_k": 1, "checkpoint_every": 5, "keep_checkpoints": 1, "steps": 20,
    "max_grad_norm": float("inf"), "relative_clip": 3.0,
}  # fmt: skip
LORA = {"lora_rank": 16, "lora_target_modules": "all-linear"}
PILOT = {  # piece: (options over BASE, objectives, seeds)
    "full": ({}, ["grpo"], 2),
    "lora-5e-5": ({**LORA, "lr": 5e-5}, ["grpo"], 2),
    "lora-2e-4": ({**LORA, "lr": 2e-4}, ["grpo"], 2),
    # the configuration the main runs use (full fine-tuning: LoRA was no faster per step here and
    # learned less in 20 steps) at mu = 4 and two learning rates, for the stress regime
    "stress-2e-5": ({"lr": 2e-5, "mu": 4, "steps": 10}, ["grpo"], 1),
    "stress-8e-5": ({"lr": 8e-5, "mu": 4, "steps": 10}, ["grpo"], 1),
    # does GRPO learn at all, within the runs' length, where the base model starts near 3%?
    # (hardly: 16 and 17 of 20 steps had no correct completion, so nothing to learn from)
    "sparse-mix3-1e-5": ({"lr": 1e-5, "num_operands": 3, "operators": "+-*"}, ["grpo"], 1),
    "sparse-mix3-4e-5": ({"lr": 4e-5, "num_operands": 3, "operators": "+-*"}, ["grpo"], 1),
    # so a less sparse candidate (sampled reward 4%), two seeds at the standard rate: it learns
    "sparse-add2-99": ({"max_operand": 99}, ["grpo"], 2),
}
CANDIDATES = {  # task options over BASE for the sparse-reward part
    "add2-20": {"num_operands": 2, "max_operand": 20, "operators": "+-"},
    "add3-50": {"num_operands": 3, "max_operand": 50, "operators": "+-"},
    "mix3-20": {"num_operands": 3, "max_operand": 20, "operators": "+-*"},
    "mul2-99": {"num_operands": 2, "max_operand": 99, "operators": "*"},
    "add2-99": {"num_operands": 2, "max_operand": 99, "operators": "+-"},
    "add3-20": {"num_operands": 3, "max_operand": 20, "operators": "+-"},
    "add2-50": {"num_operands": 2, "max_operand": 50, "operators": "+-"},
}
THRESHOLD = 0.3
# The main parts, chosen from the pilot (docs/results/smollm2_claims/pilot/pilot.md): full
# fine-tuning in float32 (LoRA was no faster per step on these short answers and learned less in
# 20 steps; bfloat16 is slower than float32 on this CPU), 5 seeds per cell, paired by seed.
SPARSE = {"max_operand": 99}  # add2-99
MAIN = {  # piece: (options over BASE, objectives, seeds); GRPO first (the reference of every pair)
    # the earlier SmolLM2 study's rate, at which GRPO learns (0.30 -> 0.57 in 20 steps)
    "standard": ({"lr": 1e-5, "steps": 20}, ["grpo", "mhpo", "dapo", "m2po"], 5),
    # mu = 4 at 2e-5, where GRPO degraded (held-out 0.30 -> 0.16 in 10 steps)
    "stress": ({"lr": 2e-5, "mu": 4, "steps": 10}, ["grpo", "mhpo", "dapo", "m2po"], 5),
    "sparse": ({**SPARSE, "lr": 1e-5, "steps": 20}, ["grpo", "hpo", "a_hpo"], 5),
}
# Decided before the main runs: the smallest differences worth calling an effect. Held-out
# accuracy: 0.05 (5 points, the size of the gains the MHPO paper reports over GRPO); early
# reward per update: a quarter of GRPO's own in that piece.
ACCURACY_EFFECT, EARLY_REWARD_EFFECT = 0.05, 0.25
COLLAPSE = 0.10  # a run collapsed when its held-out accuracy ended this far below its start
PAIRED = (("accuracy_final", "held-out acc.", 3), ("reward_per_update", "reward per update", 3),
          ("reward_per_update_early", "reward per update, first half", 3), ("final_entropy", "final entropy", 3),
          ("max_ratio", "largest ratio", 2))  # fmt: skip


def code_fingerprint() -> str:
    """A hash of the installed mhpo package's source files."""
    root = Path(mhpo.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def check_code_version(out: Path, target: Path) -> None:
    """Record the code version of a part on its first invocation, in its study directory
    ``out`` and beside its published runs in ``target`` (which outlives the study directory:
    another machine continues from it); refuse to continue with other code."""
    now, paths = code_fingerprint(), (out / "code.json", target / "code.json")
    found = [path for path in paths if path.exists()]
    for path in found:
        recorded = json.loads(path.read_text())
        if recorded["fingerprint"] != now:
            raise SystemExit(
                f"{path.parent} holds runs made with another version of mhpo (source fingerprint "
                f"{recorded['fingerprint']}, commit {recorded.get('commit') or 'unknown'}; this one is {now}). A study "
                "runs at one code version: check that commit out to continue it, or give a new --out and --publish "
                "to start over."
            )
    if found:
        text = found[0].read_text()
    else:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
        except OSError:
            commit = ""
        text = json.dumps({"fingerprint": now, "commit": commit or None}, indent=1) + "\n"
    for path in paths:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)


def base_rates(out: Path) -> str:
    """Greedy accuracy and sampled reward of the untrained model on each candidate task's
    held-out problems (the problems and sampling every run evaluates on)."""
    from mhpo.train.build import build_task, model_config
    from mhpo.train.evaluate import evaluate
    from mhpo.train.models import load_policy

    path = out / "base_rates.json"
    rates = json.loads(path.read_text()) if path.exists() else {}
    policy = None
    for name, options in CANDIDATES.items():
        if name in rates:
            continue
        cfg = TrainConfig.from_dict({**BASE, **options, "eval_k": 4})
        policy = policy or load_policy(model_config(cfg), seed=0)
        task = build_task(cfg)
        problems = task.problems("eval", cfg.eval_size, seed=0)  # the trainer's held-out problems
        start = time.perf_counter()
        rates[name] = {**evaluate(policy, task, problems, k=cfg.eval_k, temperature=cfg.temperature,
                                  top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens), "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        atomic_write_text(path, json.dumps(rates, indent=1) + "\n")
    return base_table(rates)


def base_table(rates: dict) -> str:
    lines = ["| task | options | greedy accuracy | sampled reward (avg@4, temperature 0.8) |", "|---|---|---|---|"]
    for name, r in rates.items():
        options = ", ".join(f"{k}={v}" for k, v in CANDIDATES.get(name, {}).items())
        lines.append(f"| `{name}` | {options} | {r['eval/accuracy']:.3f} | {r['eval/avg@k']:.3f} |")
    return "\n".join(lines)


def pairs_table(pieces: dict[str, list], reference: str) -> str:
    """Each piece minus ``reference`` on the same seed (GRPO in both), mean ± 95% interval."""
    summary = {name: {r.seed: summarise(r, THRESHOLD) for r in runs} for name, runs in pieces.items()}
    lines = ["| piece | pairs | " + " | ".join(f"Δ {label}" for _, label, _ in PAIRED) + " |",
             "|---|---|" + "---|" * len(PAIRED)]  # fmt: skip
    for name, runs in summary.items():
        if name == reference:
            continue
        seeds = sorted(set(runs) & set(summary[reference]))
        cells = [format_ci([runs[s][k] - summary[reference][s][k] for s in seeds], d) for k, _, d in PAIRED]
        lines.append(f"| `{name}` - `{reference}` | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pieces_table(pieces: dict[str, list]) -> str:
    """Per piece: mean ± 95% interval over seeds of what the pilot decides on."""
    keys = (("accuracy_start", "held-out acc. at step 0", 3), ("accuracy_final", "held-out acc. at the end", 3),
            ("reward_per_update", "reward per update", 3), ("final_entropy", "final entropy", 3),
            ("max_ratio", "largest ratio", 2), ("grad_spikes", "grad-norm spikes", 1))  # fmt: skip
    lines = ["| piece | runs | " + " | ".join(label for _, label, _ in keys) + " | s per step (median) |",
             "|---|---|" + "---|" * (len(keys) + 1)]  # fmt: skip
    for name, runs in pieces.items():
        rows = [summarise(r, THRESHOLD) for r in runs]
        seconds = [statistics.median(r.series("time/step")[1][1:] or [math.nan]) for r in runs]  # robust to a paused step
        cells = [format_ci([row[k] for row in rows], d) for k, _, d in keys]
        lines.append(f"| `{name}` | {len(runs)} | " + " | ".join(cells) + f" | {format_ci(seconds, 1)} |")
    return "\n".join(lines)


# Quantiles of Student's t with 4 degrees of freedom (5 seeds): two-sided 95% and one-sided 80%.
T975_4, T80_4 = 2.776, 0.941


def paired_sd(pieces: dict[str, list], key: str) -> dict[str, tuple[float, int]]:
    """Two pilot estimates of the standard deviation of a paired difference in ``key`` between
    two configurations on one seed, each with its degrees of freedom:

    - ``paired``: the sd of the LoRA - full differences on the same seed, pooled over the LoRA
      pieces: a paired difference actually measured (same prompts, same sampling seed);
    - ``unpaired``: the between-seed sd of one configuration, pooled over the pieces with two
      or more seeds, times √2: what seeds with nothing in common would give, an upper bound.
      For training reward it is far above the paired one, because seeds differ in their prompts
      and pairs share them."""

    def pooled(groups: list[list[float]]) -> tuple[float, int]:
        groups = [g for g in groups if len(g) >= 2]
        df = sum(len(g) - 1 for g in groups)
        if not df:
            return math.nan, 0
        return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups) / df), df

    values = {name: {r.seed: summarise(r, THRESHOLD)[key] for r in runs} for name, runs in pieces.items()}
    full = values.get("full", {})
    paired = pooled([[v[s] - full[s] for s in v if s in full] for name, v in values.items() if name.startswith("lora")])
    unpaired, df = pooled([list(v.values()) for v in values.values()])
    return {"paired": paired, "unpaired": (unpaired * math.sqrt(2), df)}


def detectable_text(pieces: dict[str, list], key: str, label: str, seeds: int = 5) -> str:
    """The smallest mean paired difference ``seeds`` seeds separate from zero (95% interval),
    and the true difference they detect 80% of the time, from each estimate of ``paired_sd``."""
    parts = []
    for source, (sd, df) in paired_sd(pieces, key).items():
        if math.isfinite(sd):
            separated, powered = T975_4 * sd / math.sqrt(seeds), (T975_4 + T80_4) * sd / math.sqrt(seeds)
            parts.append(f"{source} sd {sd:.3f} ({df} degrees of freedom): separated above **{separated:.3f}**, "
                         f"detected 80% of the time at {powered:.3f}")  # fmt: skip
    return f"- {label}: " + ("; ".join(parts) if parts else "no piece has two seeds yet") + "."


def drop_checkpoints(run: Path) -> None:
    """A finished run's checkpoints (1.5 GB each with full fine-tuning: the study's 55 runs would
    not fit the disk) are removed; its metrics, configuration and ``done`` mark stay, and are
    all the study reads. Runs still going keep theirs, to resume from."""
    if (run / "done").exists() and (run / "checkpoints").is_dir():
        shutil.rmtree(run / "checkpoints")


def piece_configs(root: Path, name: str, options: dict, objectives: list[str], seeds: int) -> list[TrainConfig]:
    base = TrainConfig.from_dict({**BASE, **options, "threads": 1, "progress": False})
    return [dataclasses.replace(base, objective=objective, seed=seed, output_dir=str(run_directory(root / name, objective, seed))).validate()
            for objective in objectives for seed in range(seeds)]  # fmt: skip


def run_order(configs: list[TrainConfig]) -> list[TrainConfig]:
    """Seeds two at a time (0-1, then 2-3, ...), every piece and objective within: a study
    stopped part way holds complete pairs of its first seeds, and the two runs going at once
    have different seeds, so neither waits on the other's step-0 evaluation (one per seed)."""
    return sorted(configs, key=lambda cfg: cfg.seed // 2)


def published_runs(target: Path, name: str) -> tuple[list, dict]:
    """A piece's published runs (from ``target/<name>/runs.csv``) and what is recorded of each
    (``runs.json``, keyed ``<label>-seed<seed>``: its configuration and the machine that ran it);
    none when it has not been published."""
    csv_path, record_path = target / name / "runs.csv", target / name / "runs.json"
    if not csv_path.exists():
        return [], {}
    return load_csv(csv_path), (json.loads(record_path.read_text()) if record_path.exists() else {})


def publish_piece(root: Path, target: Path, name: str) -> int:
    """Publish a piece's finished runs: those in ``root/<name>/runs`` merged with those already
    published (from an earlier machine, whose run directories are gone), as the compact CSV
    and, per run, its configuration and the machine (CPU, torch, kernels) that ran it. The
    published CSV is the piece's lasting record: written after every finished run, so whatever
    a session finished outlives it. Returns the number of runs."""
    runs = find_runs([root / name / "runs"], left_out=[]) if (root / name / "runs").is_dir() else []
    published, recorded = published_runs(target, name)
    local = {(r.label, r.seed) for r in runs}
    merged = runs + [r for r in published if (r.label, r.seed) not in local]
    here = machine()
    for r in runs:  # a run already recorded keeps the machine that ran it
        key = f"{r.label}-seed{r.seed}"
        recorded[key] = {"config": TrainConfig.from_dict(r.config).to_dict(), "machine": recorded.get(key, {}).get("machine", here)}
    (target / name).mkdir(parents=True, exist_ok=True)
    export_csv(merged, target / name / "runs.csv")
    atomic_write_text(target / name / "runs.json", json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    return len(merged)


def unpublished(configs: list[TrainConfig], target: Path, name_of) -> list[TrainConfig]:
    """The configurations whose run is not published yet. A published run counts only when its
    recorded configuration is this one, option for option (paths and the like aside): one made
    with other options is refused, not silently taken for this one."""
    todo, problems, cache = [], [], {}
    for cfg in configs:
        name = name_of(cfg)
        if name not in cache:
            cache[name] = published_runs(target, name)
        runs, recorded = cache[name]
        key = f"{run_label(cfg.to_dict())}-seed{cfg.seed}"
        if not any(f"{r.label}-seed{r.seed}" == key for r in runs):
            todo.append(cfg)
        elif key not in recorded:
            problems.append(f"{target / name}: {key} is in runs.csv without its configuration in runs.json")
        else:
            problems += [f"{target / name}: {key}: {c}" for c in cfg.changes_from(recorded[key]["config"], allowed=NOT_IDENTITY)]
    if problems:
        raise SystemExit("Published runs were made with other options than this study's (give a new --publish to "
                         "start over):\n  " + "\n  ".join(problems))  # fmt: skip
    return todo


def run_pieces(root: Path, target: Path, pieces: dict[str, tuple], jobs: int, hours: float | None = None) -> None:
    """Run every piece (options over BASE, objectives, seeds) under ``root/<piece>``, ``jobs``
    runs at a time (one thread each) from one queue, so no core idles between pieces, and
    publish each finished run at once to ``target/<piece>/runs.csv`` (`publish_piece`); then
    write each piece's report. Published runs are skipped (on any machine: the run directories
    need not be there), interrupted ones resume from their last checkpoint, and with ``hours``
    no run starts after that many hours (the ones going then finish)."""
    named = [(name, cfg) for name, piece in pieces.items() for cfg in piece_configs(root, name, *piece)]
    name_of = {str(cfg.output_dir): name for name, cfg in named}
    configs = run_order([cfg for _, cfg in named])
    check_existing_runs(configs)
    for cfg in configs:
        drop_checkpoints(Path(cfg.output_dir))
    todo = unpublished(configs, target, lambda cfg: name_of[str(cfg.output_dir)])
    print(f"{len(configs) - len(todo)} of {len(configs)} runs already published in {target}", flush=True)
    timing = root / "timing.json"
    if not timing.exists() and (target / "timing.json").exists():  # earlier machines' invocations
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target / "timing.json", timing)
    start, finished = time.perf_counter(), 0
    start_by = None if hours is None else time.time() + hours * 3600
    try:
        for result in run_parallel(run_one, [c.to_dict() for c in todo], jobs, start_by=start_by):
            if result is None:  # not started: past --hours
                continue
            directory, seconds = result
            finished += 1
            drop_checkpoints(Path(directory))
            publish_piece(root, target, name_of[directory])
            print(f"[{finished}/{len(todo)}] {directory} ({seconds:.0f} s)", flush=True)
    finally:  # an interrupted invocation (Ctrl-C, SIGTERM, the end of a session) is recorded too
        record_invocation(root, time.perf_counter() - start, pieces=list(pieces), runs=len(todo), jobs=jobs,
                          machine=machine(), finished_runs=finished, complete=finished == len(todo))  # fmt: skip
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(timing, target / "timing.json")
    if hours is not None and finished < len(todo):
        print(f"--hours {hours:g} reached: {finished} of the {len(todo)} runs left finished; the same command "
              "continues with the rest.", flush=True)
    for name in pieces:
        if publish_piece(root, target, name):
            build_report([target / name / "runs.csv"], root / name, threshold=THRESHOLD, order=pieces[name][1], title=name)


def run_pilot(out: Path, publish: Path, jobs: int, hours: float | None = None) -> None:
    pilot, target = out / "pilot", publish / "pilot"
    check_code_version(pilot, target)
    print(base_rates(pilot), flush=True)
    run_pieces(pilot, target, PILOT, jobs, hours)
    shutil.copyfile(pilot / "base_rates.json", target / "base_rates.json")
    print(rebuild_pilot(target))


def rebuild_pilot(target: Path) -> str:
    """The pilot's reports and tables from its published CSVs alone."""
    pieces = {}
    for name in PILOT:
        build_report([target / name / "runs.csv"], target / name, threshold=THRESHOLD, title=f"pilot: {name}")
        pieces[name] = load_csv(target / name / "runs.csv")
    text = (
        "# Pilot\n\nBase model, held-out problems:\n\n" + base_table(json.loads((target / "base_rates.json").read_text()))
        + "\n\nGRPO in each configuration (mean ± 95% interval over seeds):\n\n" + pieces_table(pieces)
        + "\n\nLoRA minus full fine-tuning, paired by seed:\n\n"
        + pairs_table({k: v for k, v in pieces.items() if k == "full" or k.startswith("lora")}, "full")
        + "\n\nWhat 5 seeds can detect, paired by seed (from the pieces with two seeds; the paired estimate "
        "is the one that applies to the main runs' pairs, the unpaired one bounds it):\n\n"
        + detectable_text(pieces, "accuracy_final", "held-out accuracy at the end") + "\n"
        + detectable_text(pieces, "reward_per_update_early", "reward per update, first half") + "\n"
    )
    atomic_write_text(target / "pilot.md", text)
    return text


def cut_share(run) -> float:
    """Mean share of tokens whose gradient the objective cut or damped: for MHPO its hazard
    damping beyond what it applies on-policy, 1 - survival / survival at r = 1 (its survival
    is 0.265 at r = 1 with the defaults the study uses, so plain 1 - survival would read 0.735
    with no token off-policy; negative when moderate shifts raise it), the masked share for
    M2PO, the clipped share for clipped objectives (both sides). Each objective's own
    indicator: they are not the same quantity."""
    on_policy = MHPOConfig().on_policy_survival
    for keys, transform in ((("mhpo/survival",), lambda v: 1.0 - v[0] / on_policy), (("m2po/masked_frac",), lambda v: v[0]),
                            (("clip/low_frac", "clip/high_frac"), sum)):  # fmt: skip
        series = [run.series(k)[1] for k in keys]
        if all(series) and len({len(s) for s in series}) == 1:
            return statistics.fmean(transform(v) for v in zip(*series))
    return math.nan


def verdict(values: list[float], effect: float) -> str:
    """held (interval above 0) / reversed (below 0) / no effect of ±``effect`` or more (the
    interval lies inside ±effect) / cannot tell (the interval reaches past ±effect)."""
    mean, half = mean_ci(values)
    if not math.isfinite(mean) or len(values) < 2:
        return "cannot tell"
    if mean - half > 0:
        return "**held**"
    if mean + half < 0:
        return "**reversed**"
    if -effect < mean - half and mean + half < effect:
        return f"did not hold (no effect of ±{effect:.3g} or more)"
    return "cannot tell at this scale"


def stability_verdict(differences: dict[str, list[float]]) -> str:
    """Is the first of a pair steadier? **held** when the interval of some paired difference in
    ``differences`` (log10 largest ratio, grad-norm spikes: lower is steadier) lies below 0 and
    none lies above; **reversed** the other way round; mixed when both; cannot tell otherwise."""
    below = above = False
    for values in differences.values():
        mean, half = mean_ci(values)
        if len([v for v in values if math.isfinite(v)]) > 1 and math.isfinite(mean):
            below, above = below or mean + half < 0, above or mean - half > 0
    return {(True, False): "**held**", (False, True): "**reversed**", (True, True): "mixed"}.get((below, above), "cannot tell")


def format_sd(values: list[float]) -> str:
    """The sd of a pair's differences over seeds: the noise its verdict faced (the pilot's
    estimate of it, :func:`paired_sd`, set the detectable effects)."""
    values = [v for v in values if math.isfinite(v)]
    return f"{statistics.stdev(values):.3f}" if len(values) > 1 else "n/a"


def claims_tables(pieces: dict[str, list]) -> str:
    """Per piece: every objective against GRPO (and the claimed one, MHPO or A-HPO, against the
    others) paired by seed, with verdicts; then the stability indicators of every objective."""
    out = []
    for name, runs in pieces.items():
        summary = {}
        for run in runs:
            row = summarise(run, THRESHOLD)
            row["cut_share"] = cut_share(run)
            row["collapsed"] = float(row["accuracy_final"] < row["accuracy_start"] - COLLAPSE)
            summary.setdefault(run.label, {})[run.seed] = row
        labels = [o for o in MAIN.get(name, (None, sorted(summary)))[1] if o in summary]
        grpo_early = [r["reward_per_update_early"] for r in summary.get("grpo", {}).values()]
        early_effect = EARLY_REWARD_EFFECT * statistics.fmean(grpo_early) if grpo_early else math.nan
        claimed = "a_hpo" if "a_hpo" in labels else "mhpo"
        planned = MAIN[name][2] if name in MAIN else 0  # a pair is judged once it has every planned seed
        pairs = [(a, "grpo") for a in labels if a != "grpo"] + [(claimed, b) for b in labels if b not in (claimed, "grpo")]
        accuracy, steadier, noise = [], [], []
        for a, b in pairs:
            if a not in summary or b not in summary:
                continue
            seeds = sorted(set(summary[a]) & set(summary[b]))
            d = {k: [f(summary[a][s][k]) - f(summary[b][s][k]) for s in seeds]
                 for k, f in (("accuracy_final", float), ("reward_per_update", float), ("reward_per_update_early", float),
                              ("max_ratio", math.log10), ("grad_spikes", float), ("final_entropy", float))}  # fmt: skip
            pending = f"not judged ({len(seeds)} of {planned} seeds)" if len(seeds) < planned else None
            accuracy.append(f"| `{a}` - `{b}` | {len(seeds)} | {format_ci(d['accuracy_final'])} | "
                            f"{pending or verdict(d['accuracy_final'], ACCURACY_EFFECT)} | {format_ci(d['reward_per_update'])} | "
                            f"{format_ci(d['reward_per_update_early'])} | {pending or verdict(d['reward_per_update_early'], early_effect)} |")  # fmt: skip
            steadier.append(f"| `{a}` - `{b}` | {len(seeds)} | {format_ci(d['max_ratio'])} | {format_ci(d['grad_spikes'], 1)} | "
                            f"{format_ci(d['final_entropy'])} | {pending or stability_verdict({k: d[k] for k in ('max_ratio', 'grad_spikes')})} |")  # fmt: skip
            noise.append(f"| `{a}` - `{b}` | {len(seeds)} | {format_sd(d['accuracy_final'])} | {format_sd(d['reward_per_update_early'])} |")
        out += [f"### `{name}`", ""]
        if accuracy:
            out += ["| pair | seeds | Δ held-out acc. | verdict (acc.) | Δ reward per update | Δ reward per update, first half | "
                    "verdict (first half) |", "|---|---|---|---|---|---|---|", *accuracy, "",
                    "| pair | seeds | Δ log10 largest ratio | Δ grad-norm spikes | Δ final entropy | verdict (steadier) |",
                    "|---|---|---|---|---|---|", *steadier, "",
                    "| pair | seeds | sd of Δ held-out acc. over seeds | sd of Δ reward per update, first half |",
                    "|---|---|---|---|", *noise]  # fmt: skip
        else:
            out.append("No pair yet: only " + ", ".join(f"`{label}`" for label in labels) + " has runs.")
        keys = (("accuracy_start", "acc. at step 0", 3), ("accuracy_final", "acc. at the end", 3),
                ("reward_per_update_early", "reward per update, first half", 3), ("grad_spikes", "grad-norm spikes", 1),
                ("max_ratio", "largest ratio", 2), ("final_entropy", "final entropy", 3),
                ("cut_share", "tokens cut or damped", 3), ("clipped_frac", "steps grad-clipped", 2))  # fmt: skip
        out += ["", "| objective | seeds | " + " | ".join(k[1] for k in keys) + " | collapsed |", "|---|---|" + "---|" * (len(keys) + 1)]
        for label in labels:
            rows = list(summary[label].values())
            cells = [format_ci([r[k] for r in rows], d) for k, _, d in keys]
            out.append(f"| `{label}` | {len(rows)} | " + " | ".join(cells) + f" | {int(sum(r['collapsed'] for r in rows))}/{len(rows)} |")
        out.append("")
    return "\n".join(out)


def export_main(out: Path, publish: Path) -> None:
    """Publish the main parts' runs as they stand (no training, so any code version may do
    it): each piece's compact CSV, merged with what is published, then the tables rebuilt."""
    for name in MAIN:
        publish_piece(out / "main", publish / "main", name)
    print(rebuild_main(publish / "main"))


def run_main(out: Path, publish: Path, jobs: int, hours: float | None = None) -> None:
    check_code_version(out / "main", publish / "main")
    run_pieces(out / "main", publish / "main", MAIN, jobs, hours)
    print(rebuild_main(publish / "main"))


def rebuild_main(target: Path) -> str:
    """The main parts' reports and claims tables from the published CSVs alone."""
    pieces = {}
    for name in MAIN:
        if (target / name / "runs.csv").exists():
            build_report([target / name / "runs.csv"], target / name, threshold=THRESHOLD, order=MAIN[name][1], title=name)
            pieces[name] = load_csv(target / name / "runs.csv")
    text = (
        "# The claims on SmolLM2-135M-Instruct\n\nPaired by seed (same starting weights, prompts and "
        "sampling seed); mean ± 95% interval over seeds (t distribution). A pair is judged once it has every "
        "planned seed (5). Verdicts: **held** when the interval "
        f"lies above 0, **reversed** below 0, *did not hold* when it lies within ±{ACCURACY_EFFECT} held-out "
        f"accuracy (or ±{EARLY_REWARD_EFFECT:g}x GRPO's early reward per update), *cannot tell* otherwise. "
        "Steadier: **held** when the interval of the paired difference in log10 largest ratio or in grad-norm "
        "spikes lies below 0 and neither lies above (**reversed** the other way round, *mixed* both). A run "
        f"collapsed when its held-out accuracy ended more than {COLLAPSE} below its start. Tokens cut or damped: "
        "each objective's own indicator (clipped share; M2PO's masked share; MHPO's hazard damping beyond its "
        "on-policy value, 1 - survival / 0.265).\n\n"
        + claims_tables(pieces)
    )
    atomic_write_text(target / "claims.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/smollm2_claims", help="study directory (default: %(default)s)")
    parser.add_argument("--publish", default=str(HERE.parent / "docs" / "results" / "smollm2_claims"),
                        help="where the CSVs and reports go (default: docs/results/smollm2_claims)")
    parser.add_argument("--part", default="pilot", choices=["pilot", "main"], help="which part (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: %(default)s)")
    parser.add_argument("--from-docs", action="store_true", help="only rebuild the reports and tables from the published CSVs")
    parser.add_argument("--export", action="store_true", help="with --part main: only publish its runs as they stand (CSVs, tables)")
    parser.add_argument("--hours", type=float, default=None,
                        help="start no run after this many hours; the runs going then finish (default: no limit)")
    args = parser.parse_args(argv)
    publish = Path(args.publish)
    if args.hours is not None and not args.hours > 0:
        parser.error(f"--hours must be a positive number of hours, not {args.hours}")
    if args.export and (args.part != "main" or args.from_docs):
        parser.error("--export republishes the main part's runs: use it with --part main and without --from-docs")
    if args.from_docs:
        print(rebuild_pilot(publish / "pilot") if args.part == "pilot" else rebuild_main(publish / "main"))
    elif args.export:
        export_main(Path(args.out), publish)
    elif args.part == "pilot":
        run_pilot(Path(args.out), publish, args.jobs, args.hours)
    else:
        run_main(Path(args.out), publish, args.jobs, args.hours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
