"""Does bfloat16 learn as float32 does? The same runs in both dtypes, paired by seed.

    .venv/bin/python studies/bfloat16.py                   # both parts (about 40 minutes on 2 cores)
    .venv/bin/python studies/bfloat16.py --parts tiny      # only the main job's setting
    .venv/bin/python studies/bfloat16.py --from-docs       # rebuild reports and pairs from the committed CSVs

Two parts, each run once with --dtype float32 and once with --dtype bfloat16 (matmuls in
bfloat16 through autocast; log-softmax, loss and optimizer state in float32):

- ``tiny``: the main job's setting (`make run`): GRPO, DAPO, SAPO, A-HPO and MHPO on 3-number
  Countdown from the warm-started 0.86 M-parameter model, 3 seeds, 60 steps;
- ``smollm2``: SmolLM2-135M-Instruct on the short-answer arithmetic of studies/smollm2.py,
  GRPO, 2 seeds, 20 steps.

Same seed, same warm start and prompts; the dtype changes every logit a little, so the sampled
completions part ways after the first step: the comparison is of outcomes, paired by seed. It
is resumable (finished runs are skipped). For each part, runs.csv, report.md and pairs.md (the
paired bfloat16 - float32 differences) and timing.json (the wall time of each invocation)
are written to docs/results/bfloat16/<part>/.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import time
from pathlib import Path

from mhpo.study.compare import compare, record_invocation
from mhpo.study.report import build_report
from mhpo.files import atomic_write_text
from mhpo.study.runs import export_csv, find_runs, load_csv
from mhpo.study.summary import format_ci, summarise
from mhpo.train.config import TrainConfig

HERE = Path(__file__).resolve().parent
SMOLLM2 = {
    "model": "smollm2-135m", "task": "arithmetic", "num_operands": 2, "max_operand": 20, "operators": "+-",
    "answer_format": "number", "batch_size": 32, "group_size": 8, "mu": 1, "minibatches": 2,
    "micro_batch_size": 16, "max_new_tokens": 32, "temperature": 0.8, "lr": 1e-5, "warmup_steps": 2,
    "eval_every": 0, "eval_size": 100, "eval_k": 1, "checkpoint_every": 5, "steps": 20,
}  # fmt: skip
PARTS = {  # name: (configuration, objectives, seeds, threshold)
    "tiny": ({}, ["grpo", "dapo", "sapo", "a_hpo", "mhpo"], 3, 0.3),
    "smollm2": (SMOLLM2, ["grpo"], 2, 0.3),
}
DTYPES = ("float32", "bfloat16")
PAIRED = (("accuracy_final", "held-out acc.", 3), ("reward_per_update", "reward per update", 3),
          ("final_reward", "final reward", 3), ("final_entropy", "final entropy", 3),
          ("max_ratio", "largest ratio", 2), ("grad_spikes", "grad-norm spikes", 1))  # fmt: skip


def step_seconds(run) -> float:
    """Mean wall time of a run's steps after the first."""
    _, seconds = run.series("time/step")
    return statistics.fmean(seconds[1:] or seconds)


def dtype_of(run) -> str:
    """The run's dtype: from its configuration, or from its label (runs read back from a CSV)."""
    found = re.search(r"dtype=(\w+)", run.label)
    return run.config.get("dtype") or (found.group(1) if found else "")


def pairs_table(runs, threshold: float) -> str:
    """Per objective: bfloat16 minus float32 on the same seed, mean ± 95% interval over seeds."""
    by_key = {(r.config.get("objective"), dtype_of(r), r.seed): summarise(r, threshold) for r in runs}
    objectives = list(dict.fromkeys(o for o, _, _ in by_key))
    lines = ["| objective | pairs | " + " | ".join(f"Δ {name}" for _, name, _ in PAIRED) + " | time per step (bf16 / fp32) |",
             "|---|---|" + "---|" * (len(PAIRED) + 1)]  # fmt: skip
    for objective in objectives:
        seeds = sorted(s for o, d, s in by_key if o == objective and d == "bfloat16" and (o, "float32", s) in by_key)
        pairs = [(by_key[(objective, "bfloat16", s)], by_key[(objective, "float32", s)]) for s in seeds]
        cells = [format_ci([b[k] - f[k] for b, f in pairs], digits) for k, _, digits in PAIRED]
        seconds = {d: [step_seconds(r) for r in runs if r.config.get("objective") == objective
                       and dtype_of(r) == d] for d in DTYPES}  # fmt: skip
        ratio = statistics.fmean(seconds["bfloat16"]) / statistics.fmean(seconds["float32"])
        lines.append(f"| `{objective}` | {len(pairs)} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(lines)


def run_part(name: str, out: Path, publish: Path, jobs: int) -> None:
    config, objectives, seeds, threshold = PARTS[name]
    for dtype in DTYPES:
        cfg = TrainConfig.from_dict({**config, "dtype": dtype})
        start = time.perf_counter()
        compare(cfg, objectives, seeds, out / name / dtype, jobs=jobs, threshold=threshold)
        record_invocation(out / name, time.perf_counter() - start, part=name, dtype=dtype, jobs=jobs)
    target = publish / name
    target.mkdir(parents=True, exist_ok=True)
    export_csv(find_runs([out / name / dtype / "runs" for dtype in DTYPES]), target / "runs.csv")
    shutil.copyfile(out / name / "timing.json", target / "timing.json")
    print(f"\n{name}:\n{rebuild(name, target)}")


def rebuild(name: str, target: Path) -> str:
    """report.md, its plots and pairs.md of a part from its runs.csv alone; returns the pairs table."""
    _, objectives, _, threshold = PARTS[name]
    build_report([target / "runs.csv"], target, threshold=threshold, title=f"float32 against bfloat16: {name}",
                 order=[f"{o} (dtype={d})" for o in objectives for d in DTYPES])  # fmt: skip
    table = pairs_table(load_csv(target / "runs.csv"), threshold)
    atomic_write_text(target / "pairs.md", f"# bfloat16 minus float32, paired by seed: {name}\n\n{table}\n")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/bfloat16", help="study directory (default: %(default)s)")
    parser.add_argument("--publish", default=str(HERE.parent / "docs" / "results" / "bfloat16"),
                        help="where runs.csv, report.md and pairs.md go (default: docs/results/bfloat16)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: tiny, smollm2")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: %(default)s)")
    parser.add_argument("--from-docs", action="store_true", help="only rebuild the reports and pairs from the published CSVs")
    args = parser.parse_args(argv)
    for name in [p.strip() for p in args.parts.split(",") if p.strip()]:
        if name not in PARTS:
            parser.error(f"unknown part {name!r}; use {', '.join(PARTS)}")
        if args.from_docs:
            print(f"\n{name}:\n{rebuild(name, Path(args.publish) / name)}")
        else:
            run_part(name, Path(args.out), Path(args.publish), args.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
