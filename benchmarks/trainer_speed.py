"""Trainer throughput: rollout and update tokens/s on the tiny model, and the time of one RL
step with SmolLM2-135M-Instruct (G = 8, 128 new tokens), in float32 and bfloat16 autocast.

    .venv/bin/python benchmarks/trainer_speed.py               # both parts
    .venv/bin/python benchmarks/trainer_speed.py --skip-smollm2

Each configuration runs a few RL steps after a warm-up step and reports medians. Generation
is capped by max_new_tokens; SmolLM2 completions that stop early at EOS do less work, so the
tokens actually generated are reported next to the time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from mhpo.train.config import TrainConfig
from mhpo.train.trainer import Trainer


def measure(cfg: TrainConfig, steps: int) -> dict[str, float]:
    trainer = Trainer(cfg, log=lambda *a: None)
    trainer.skip_idle_updates = False  # time every update, also one whose advantages are all 0
    trainer.train_step()  # warm-up: first-call allocations
    records = [trainer.train_step() for _ in range(steps)]
    med = lambda key: statistics.median(r[key] for r in records)  # noqa: E731
    return {
        "step_s": med("time/step"),
        "generate_s": med("time/generate"),
        "update_s": med("time/update"),
        "rollout_tok_s": med("tokens/rollout_per_s"),
        "update_tok_s": med("tokens/update_per_s"),
        "length": med("length/mean"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        tiny = TrainConfig(objective="mhpo", output_dir=f"{tmp}/tiny", progress=False, eval_size=1, eval_k=1,
                           cache_dir=f"{tmp}/cache", warmstart_steps=0)  # fmt: skip
        r = measure(tiny, args.steps)
        print(f"tiny (0.86M params), batch {tiny.batch_size} x <= {tiny.max_new_tokens} new tokens, mu {tiny.mu}: "
              f"step {r['step_s']:.2f}s (generate {r['generate_s']:.2f}s, update {r['update_s']:.2f}s), "
              f"rollout {r['rollout_tok_s']:.0f} tok/s, update {r['update_tok_s']:.0f} tok/s, "
              f"mean length {r['length']:.1f}")  # fmt: skip
        if args.skip_smollm2:
            return
        for dtype in ("float32", "bfloat16"):
            cfg = TrainConfig(objective="mhpo", model="smollm2-135m", task="arithmetic", dtype=dtype, batch_size=8,
                              group_size=8, micro_batch_size=8, minibatches=1, mu=1, max_new_tokens=128,
                              warmstart_steps=0, eval_size=1, eval_k=1, progress=False, output_dir=f"{tmp}/{dtype}",
                              cache_dir=f"{tmp}/cache", lr=1e-6)  # fmt: skip
            r = measure(cfg, max(1, args.steps // 2))
            print(f"smollm2-135m {dtype}, G = 8 x <= 128 new tokens: step {r['step_s']:.1f}s "
                  f"(generate {r['generate_s']:.1f}s, update {r['update_s']:.1f}s), rollout {r['rollout_tok_s']:.0f} tok/s, "
                  f"update {r['update_tok_s']:.0f} tok/s, mean length {r['length']:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
