"""On a CUDA machine: a few steps of mhpo's trainer on SmolLM2-135M-Instruct in bfloat16, a few
steps of TRL with mhpo's plug-in, and every objective's forward + backward on the GPU, in one
table. On a machine without CUDA it says so and exits 0.

    make gpu-check
    .venv/bin/python benchmarks/gpu_check.py --steps 3

Each part runs on its own; one that fails is a row saying what failed and why (the others
still run), and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import traceback

import torch

import mhpo


def skip_reason() -> str | None:
    """Why this machine cannot run the check, or None when it can."""
    if not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return f"no CUDA device is visible (torch {torch.__version__}, {built}); nothing to check here"
    return None


def trainer_part(steps: int, tmp: str) -> dict:
    from mhpo.train.config import TrainConfig
    from mhpo.train.trainer import Trainer

    cfg = TrainConfig(objective="mhpo", model="smollm2-135m", task="arithmetic", dtype="bfloat16", device="cuda",
                      batch_size=32, group_size=8, micro_batch_size=32, max_new_tokens=48, steps=steps, lr=1e-6,
                      warmstart_steps=0, eval_size=8, eval_k=1, progress=False, output_dir=f"{tmp}/trainer",
                      cache_dir=f"{tmp}/cache")  # fmt: skip
    torch.cuda.reset_peak_memory_stats()
    records = Trainer(cfg, log=lambda *a: None).train()
    steps_done = [r for r in records if r["step"] >= 1]
    timed = steps_done[1:] or steps_done
    return {"s/step": statistics.median(r["time/step"] for r in timed), "reward": steps_done[-1]["reward/mean"],
            "peak GiB": torch.cuda.max_memory_allocated() / 2**30,
            "note": f"{len(steps_done)} steps, grad norm {steps_done[-1]['grad_norm/max']:.3g}"}  # fmt: skip


def trl_part(steps: int, tmp: str) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from mhpo.integrations.trl import ObjectiveGRPOConfig, ObjectiveGRPOTrainer
    from mhpo.tasks import Arithmetic, ArithmeticConfig
    from mhpo.train.models import save_smollm2_hf_model

    directory = save_smollm2_hf_model(f"{tmp}/smollm2")
    task = Arithmetic(ArithmeticConfig(num_operands=3, max_operand=20))
    problems = task.problems("train", 256, seed=0)
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": p.instruction}] for p in problems],
                              "answer": [p.answer for p in problems]})  # fmt: skip

    def reward(completions, answer, **kwargs):
        return [task.score(c[-1]["content"], type("P", (), {"answer": a})()) for c, a in zip(completions, answer)]

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.append(-time.perf_counter())

        def on_step_end(self, *a, **k):
            times[-1] += time.perf_counter()

    config = ObjectiveGRPOConfig(objective="mhpo", output_dir=f"{tmp}/trl", per_device_train_batch_size=32,
                                 num_generations=8, max_completion_length=48, max_steps=steps, learning_rate=1e-6,
                                 logging_steps=1, report_to="none", save_strategy="no", bf16=True, seed=0)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    trainer = ObjectiveGRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data,
                                   processing_class=AutoTokenizer.from_pretrained(directory), callbacks=[Clock()])  # fmt: skip
    trainer.train()
    logged = [e for e in trainer.state.log_history if "reward" in e]
    return {"s/step": statistics.median(times[1:] or times), "reward": logged[-1]["reward"] if logged else float("nan"),
            "peak GiB": torch.cuda.max_memory_allocated() / 2**30, "note": f"{len(times)} steps, bf16"}  # fmt: skip


def objectives_part(repeats: int = 5) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(0)
    B, T = 64, 4096
    old = -torch.rand(B, T, generator=gen, device="cuda") * 4
    logp = old + torch.randn(B, T, generator=gen, device="cuda") * 0.3
    mask = (torch.arange(T, device="cuda") < torch.randint(T // 4, T + 1, (B, 1), generator=gen, device="cuda")).float()
    advantages = mhpo.group_advantages(torch.randint(0, 2, (B,), generator=gen, device="cuda").float(), 8)
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name in mhpo.list_objectives():
            leaf = logp.detach().requires_grad_(True)
            torch.cuda.synchronize()
            start = time.perf_counter()
            mhpo.policy_loss(name, leaf, old, advantages, mask).loss.backward()
            torch.cuda.synchronize()
            times.setdefault(name, []).append(time.perf_counter() - start)
    medians = {name: statistics.median(v[1:] or v) for name, v in times.items()}
    slowest = max(medians, key=medians.get)
    return {"s/step": medians["grpo"], "reward": float("nan"), "peak GiB": float("nan"),
            "note": f"{len(medians)} objectives, (B, T) = ({B}, {T}); slowest {slowest} at "
                    f"{medians[slowest] / medians['grpo']:.2f}x GRPO"}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="RL steps of the trainer and of TRL")
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(f"gpu-check skipped: {reason}.")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"gpu-check on {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        for name, part in (("trainer (SmolLM2, bf16)", lambda: trainer_part(args.steps, tmp)),
                           ("TRL + mhpo plug-in (bf16)", lambda: trl_part(args.steps, tmp)),
                           ("objectives fwd+bwd (GRPO)", objectives_part)):  # fmt: skip
            try:
                rows.append((name, part()))
            except Exception as error:  # a row that says what failed; the other parts still run
                failed = True
                where = traceback.extract_tb(error.__traceback__)[-1]
                rows.append((name, {"note": f"FAILED: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
                                            f"({os.path.basename(where.filename)}:{where.lineno})"}))  # fmt: skip
    print(f"\n{'part':<28} {'s/step':>8} {'reward':>7} {'peak GiB':>9}  note")
    for name, row in rows:
        cells = [f"{row[k]:>{w}.3f}" if isinstance(row.get(k), float) else f"{'-':>{w}}"
                 for k, w in (("s/step", 8), ("reward", 7), ("peak GiB", 9))]  # fmt: skip
        print(f"{name:<28} {' '.join(cells)}  {row.get('note', '')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
