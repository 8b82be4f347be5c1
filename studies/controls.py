"""Controls for the stability study, and where each objective breaks.

    .venv/bin/python studies/controls.py                       # controls, then the learning-rate sweep
    .venv/bin/python studies/controls.py --part controls --tasks countdown4   # a part

The objectives' raw gradient scales differ by design (MHPO's on-policy weight is 0.265;
token-mean aggregation gives larger norms than sequence-mean), so gradient clipping at a fixed
norm of 1.0 acts on some objectives' every step and on others' never: in effect a different
optimizer per objective. The controls rerun the comparison on 3- and 4-number Countdown, in
the stability study's standard and stress regimes and on its seeds (same warm start, prompts and
held-out problems, so differences are paired), with:

* ``clip1``: clipping at 1.0, as in the stability study (its runs, rerun here beside the others);
* ``noclip``: no gradient clipping (max_grad_norm = inf);
* ``relative``: no fixed threshold; a step's gradient is clipped at 3x the median pre-clip norm
  of the run's earlier optimizer steps (none during the first 10), so clipping removes
  outliers instead of rescaling every step.

``mhpo@normalize_on_policy=true`` runs beside ``mhpo`` in every control, to take MHPO's
constant 0.265 factor out of the picture.

The sweep runs every objective on 3-number Countdown at mu = 4 over learning rates from a
quarter of the standard one (2.5e-5) to four times the stress one (1.6e-3), three seeds each,
for the largest rate at which held-out accuracy still ends above the warm start. (The rates
below 1e-4 were added after a first pass: at mu = 4, SAPO, CISPO and MHPO ended below the warm
start even at 1e-4.) Its 4e-4 piece is the stress regime with clipping at 1.0, the clip1 stress
runs' configuration.

Each piece is a `mhpo compare` study directory under --out: resumable (rerun the command to
finish it), with report.md, plots and a compact runs.csv. Wall times go to timing.json.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from mhpo.study.compare import compare, record_invocation
from mhpo.study.runs import export_csv, find_runs
from mhpo.study.summary import summary_table
from mhpo.study.sweep import plot_sweep, sweep_table
from mhpo.train.config import TrainConfig
from mhpo.files import atomic_write_text

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from stability import BASE, REGIMES, TASKS  # noqa: E402  (the stability study's design, shared)

OBJECTIVES = ["grpo", "dapo", "sapo", "cispo", "a_hpo", "mhpo", "mhpo@normalize_on_policy=true"]
RELATIVE_CLIP = 3.0
CONTROLS = {
    "clip1": {"max_grad_norm": 1.0},
    "noclip": {"max_grad_norm": float("inf")},
    "relative": {"max_grad_norm": float("inf"), "relative_clip": RELATIVE_CLIP},
}
SWEEP_RATES = [2.5e-5, 5e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3]
CONTROL_TASKS = ["countdown3", "countdown4"]
SWEEP_TASK = "countdown3"
THRESHOLD = TASKS[SWEEP_TASK]["threshold"]  # the sweep's


def pieces(part: str, tasks: list[str] = CONTROL_TASKS) -> list[tuple[str, str, dict, int]]:
    """(directory name, task, options, seeds) of every study piece, controls first (for the
    given tasks; the sweep is on SWEEP_TASK)."""
    out = []
    if part in ("all", "controls"):
        for task in tasks:
            for control, options in CONTROLS.items():
                for regime in REGIMES:
                    out.append((f"{control}-{task}-{regime}", task, {**REGIMES[regime], **options}, 5))
    if part in ("all", "sweep"):
        for lr in SWEEP_RATES:
            out.append((f"sweep-{SWEEP_TASK}-lr{lr:g}", SWEEP_TASK, {"mu": 4, "lr": lr}, 3))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/controls", help="study directory (default: %(default)s)")
    parser.add_argument("--part", choices=("all", "controls", "sweep"), default="all")
    parser.add_argument("--tasks", default=",".join(CONTROL_TASKS), help="the controls' tasks (default: %(default)s)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated variants (default: all)")
    parser.add_argument("--seeds", type=int, default=None, help="override the seeds (5 for controls, 3 for the sweep)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="override the RL steps (for a quick look)")
    args = parser.parse_args(argv)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if unknown := [t for t in tasks if t not in CONTROL_TASKS]:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(CONTROL_TASKS)}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, task, options, seeds in pieces(args.part, tasks):
        values = {**BASE, **TASKS[task]["config"], **options, **({"steps": args.steps} if args.steps else {})}
        cfg = TrainConfig.from_dict(values)
        start = time.perf_counter()
        compare(cfg, objectives, args.seeds or seeds, out / name, jobs=args.jobs, threshold=TASKS[task]["threshold"])
        record_invocation(out, time.perf_counter() - start, piece=name, jobs=args.jobs)
        export_csv(find_runs([out / name / "runs"]), out / name / "runs.csv")
    write_summary(out, objectives)
    return 0


def write_summary(out: pathlib.Path, objectives: list[str]) -> None:
    """summary.md: each control's table with paired differences against GRPO, then the sweep's
    break points (sweep.md's table and sweep.png)."""
    sections = ["# Controls and learning-rate sweep: summary", ""]
    for name, task, _, _ in pieces("controls"):
        if (out / name / "runs").exists():
            runs = find_runs([out / name / "runs"])
            sections += [f"## {name}", "", summary_table(runs, threshold=TASKS[task]["threshold"], order=objectives), ""]
    sweep_dirs = [out / name / "runs" for name, _, _, _ in pieces("sweep") if (out / name / "runs").exists()]
    if sweep_dirs:
        table, grid = sweep_table(find_runs(sweep_dirs), "lr", THRESHOLD, order=objectives)
        plot_sweep(grid, out / "sweep.png", "lr", order=objectives)
        sections += ["## Learning-rate sweep (mu = 4)", "", table, "", "![sweep](sweep.png)", ""]
    atomic_write_text(out / "summary.md", "\n".join(sections) + "\n")
    print(f"wrote {out / 'summary.md'}")


if __name__ == "__main__":
    sys.exit(main())
