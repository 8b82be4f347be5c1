"""Stability study: every objective on Countdown (3 and 4 numbers) in two regimes.

    .venv/bin/python studies/stability.py                 # the whole study, 2 runs at a time
    .venv/bin/python studies/stability.py --cells countdown3-standard --seeds 2   # a piece

Cells are task x regime: ``countdown3``/``countdown4`` (3 or 4 numbers) crossed with
``standard`` (mu = 2, lr 1e-4) and ``stress`` (mu = 4, lr 4e-4: four times the passes over
each rollout batch at four times the step size, so ratios drift far from 1). Every cell runs
the same objectives on the same seeds; a seed fixes the warm start, the prompts and the
held-out problems, so differences against GRPO are paired.

The study is resumable: each run is a `mhpo compare` run directory, finished runs are
skipped and interrupted ones continue from their last checkpoint, so rerunning the command
completes it piece by piece. At the end of every invocation each cell gets a report
(report.md, curves.png, stability.png) and a compact CSV of its per-step metrics
(runs.csv, which `mhpo report runs.csv` turns back into the same report), and the study
directory gets summary.md with one table per regime and timing.json with the wall times.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from mhpo.study.compare import compare, record_invocation
from mhpo.study.report import build_report
from mhpo.study.runs import export_csv, find_runs
from mhpo.study.summary import summary_table
from mhpo.train.config import TrainConfig
from mhpo.files import atomic_write_text

# hpo@hysteresis=0 drops the negative-advantage updates altogether (alpha = 0), the setting
# the HPO paper reports as collapsing response length.
OBJECTIVES = [
    "grpo", "dr_grpo", "dapo", "gspo", "sapo", "cispo", "hpo", "a_hpo", "mhpo",
    "mhpo@use_dhp=false", "mhpo@use_lfm=false", "hpo@hysteresis=0",
]  # fmt: skip

TASKS = {
    # threshold: training reward that counts as "reached" for steps-to-threshold, set
    # before the study at about 1.7x the warm start's sampled reward on each task.
    "countdown3": {"config": {"task": "countdown", "num_numbers": 3}, "threshold": 0.25},
    "countdown4": {"config": {"task": "countdown", "num_numbers": 4}, "threshold": 0.15},
}
REGIMES = {
    "standard": {"mu": 2, "lr": 1e-4},
    "stress": {"mu": 4, "lr": 4e-4},
}
# Shared by every run: sized so that the whole study (240 runs) fits a few hours on 2 CPU cores.
BASE = {
    "model": "tiny", "steps": 40, "batch_size": 64, "group_size": 8, "minibatches": 2,
    "max_new_tokens": 16, "eval_every": 20, "eval_size": 500, "eval_k": 2, "checkpoint_every": 10,
}  # fmt: skip


def cell_config(task: str, regime: str, overrides: dict) -> TrainConfig:
    return TrainConfig.from_dict({**BASE, **TASKS[task]["config"], **REGIMES[regime], **overrides})


def main(argv: list[str] | None = None) -> int:
    cells_all = [f"{t}-{r}" for t in TASKS for r in REGIMES]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/stability", help="study directory (default: %(default)s)")
    parser.add_argument("--cells", default=",".join(cells_all), help="comma-separated cells (default: all)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated variants (default: all)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per objective (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="override the RL steps (for a quick look)")
    parser.add_argument("--report-only", action="store_true", help="rebuild reports from finished runs, run nothing")
    args = parser.parse_args(argv)

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in cells_all]
    if unknown:
        parser.error(f"unknown cell(s) {', '.join(unknown)}; choose from {', '.join(cells_all)}.")
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    overrides = {"steps": args.steps} if args.steps else {}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    for cell in cells:
        task, regime = cell.split("-")
        cfg = cell_config(task, regime, overrides)
        threshold = TASKS[task]["threshold"]
        cell_dir = out / cell
        if not args.report_only:
            start = time.perf_counter()
            compare(cfg, objectives, args.seeds, cell_dir, jobs=args.jobs, threshold=threshold)
            record_invocation(out, time.perf_counter() - start, cell=cell, jobs=args.jobs)
        runs = find_runs([cell_dir / "runs"])
        if runs:
            notes = (
                f"Cell `{cell}`: {task} ({cfg.num_numbers} numbers), regime {regime} (mu = {cfg.mu}, lr = {cfg.lr}); "
                f"{cfg.steps} RL steps of {cfg.batch_size} completions (G = {cfg.group_size}, {cfg.minibatches} "
                f"mini-batches per pass); warm start {cfg.warmstart_steps_value()} SFT steps."
            )
            build_report([cell_dir / "runs"], cell_dir, threshold=threshold, order=objectives, title=f"Stability: {cell}", notes=notes)
            export_csv(runs, cell_dir / "runs.csv")

    sections = ["# Stability study: summary", ""]
    for cell in cells_all:
        runs = find_runs([out / cell / "runs"]) if (out / cell / "runs").exists() else []
        if runs:
            threshold = TASKS[cell.split("-")[0]]["threshold"]
            sections += [f"## {cell}", "", summary_table(runs, threshold=threshold, order=objectives), ""]
    atomic_write_text(out / "summary.md", "\n".join(sections) + "\n")
    print(f"wrote {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
