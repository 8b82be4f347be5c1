"""Time per RL step: mhpo's trainer against TRL's GRPOTrainer, at equal work.

    .venv/bin/python benchmarks/trainer_vs_trl.py                 # 3 alternating runs of each
    .venv/bin/python benchmarks/trainer_vs_trl.py --runs 5 --steps 6

All three contenders train the same tiny Llama (a local Hugging Face directory with a
character tokenizer, built from a seed) on the same arithmetic prompts with the same reward,
group size, completions per step, token budget and passes per batch (mu = TRL's
num_iterations), on CPU:

* ``mhpo`` — mhpo's trainer, objective grpo;
* ``trl-grpo`` — TRL's GRPOTrainer, its native loss_type="grpo";
* ``trl-mhpo`` — TRL's GRPOTrainer with mhpo's plug-in, objective mhpo.

Runs alternate (mhpo, trl-grpo, trl-mhpo, mhpo, ...) so that drifts of the machine touch all
alike. A run's time per step is the median over its steps after the first (warm-up); the
table gives medians over runs and the ratio to mhpo measured in this same invocation, plus
completion tokens per second and the process's peak resident memory for each contender
(each run is its own process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

CONTENDERS = ("mhpo", "trl-grpo", "trl-mhpo")


def run_one(kind: str, model_dir: str, args: argparse.Namespace, out_dir: str) -> dict:
    """One run in this process; prints a JSON line with its timings."""
    import resource

    import torch

    torch.manual_seed(0)
    from mhpo.tasks import Arithmetic, ArithmeticConfig

    task = Arithmetic(ArithmeticConfig(num_operands=3, max_operand=20))
    problems = task.problems("train", 4096, seed=0)
    step_times: list[float] = []
    tokens: list[int] = []
    if kind == "mhpo":
        from mhpo.train.config import TrainConfig
        from mhpo.train.trainer import Trainer

        cfg = TrainConfig(
            objective="grpo", model=model_dir, task="arithmetic", num_operands=3, max_operand=20,
            batch_size=args.batch, group_size=args.group, max_new_tokens=args.tokens, mu=args.mu, minibatches=1,
            micro_batch_size=args.batch, lr=1e-5, warmstart_steps=0, eval_size=1, eval_k=1, progress=False,
            output_dir=f"{out_dir}/mhpo", cache_dir=f"{out_dir}/cache", temperature=1.0,
        )  # fmt: skip
        trainer = Trainer(cfg, log=lambda *a: None)
        for _ in range(args.steps + 1):
            record = trainer.train_step()
            step_times.append(record["time/step"])
            tokens.append(round(record["length/mean"] * args.batch))
    else:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

        from mhpo.integrations.trl import ObjectiveGRPOConfig, ObjectiveGRPOTrainer
        from trl import GRPOConfig, GRPOTrainer

        def reward(completions, answer, **kwargs):
            return [task.score(c, type("P", (), {"answer": a})()) for c, a in zip(completions, answer)]

        common = dict(
            output_dir=f"{out_dir}/{kind}", per_device_train_batch_size=args.batch, num_generations=args.group,
            max_completion_length=args.tokens, num_iterations=args.mu, gradient_accumulation_steps=1,
            max_steps=args.steps + 1, learning_rate=1e-5, logging_steps=1, use_cpu=True, report_to="none",
            save_strategy="no", seed=0, temperature=1.0, disable_tqdm=True,
        )  # fmt: skip
        if kind == "trl-grpo":
            config, cls = GRPOConfig(loss_type="grpo", **common), GRPOTrainer
        else:
            config, cls = ObjectiveGRPOConfig(objective="mhpo", **common), ObjectiveGRPOTrainer
        data = Dataset.from_dict({"prompt": [p.prompt for p in problems], "answer": [p.answer for p in problems]})
        marks: list[float] = []

        class Clock(TrainerCallback):
            def on_step_begin(self, *a, **k):
                marks.append(time.perf_counter())

            def on_step_end(self, *a, **k):
                step_times.append(time.perf_counter() - marks[-1])

        model = AutoModelForCausalLM.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        trainer = cls(model=model, reward_funcs=reward, args=config, train_dataset=data, processing_class=tokenizer,
                      callbacks=[Clock()])  # fmt: skip
        trainer.train()
        tokens = [round(e["completions/mean_length"] * args.batch) for e in trainer.state.log_history
                  if "completions/mean_length" in e]  # fmt: skip
    steady = step_times[1:]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "kind": kind,
        "step_s": statistics.median(steady),
        "tokens_per_step": statistics.median(tokens[1:] or tokens),
        "peak_mib": peak / 2**20,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each contender (alternating)")
    parser.add_argument("--steps", type=int, default=4, help="timed RL steps per run, after one warm-up step")
    parser.add_argument("--batch", type=int, default=64, help="completions per step")
    parser.add_argument("--group", type=int, default=8, help="group size G")
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens")
    parser.add_argument("--mu", type=int, default=1, help="passes per batch (TRL num_iterations)")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--only", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        run_one(args.only, args.model_dir, args, args.out_dir)
        return

    from mhpo.train.models import save_tiny_hf_model

    results: dict[str, list[dict]] = {k: [] for k in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_hf_model(f"{tmp}/model", hidden_size=args.hidden_size, num_layers=args.num_layers,
                                       num_heads=4, intermediate_size=3 * args.hidden_size)  # fmt: skip
        passthrough = ["--steps", str(args.steps), "--batch", str(args.batch), "--group", str(args.group),
                       "--tokens", str(args.tokens), "--mu", str(args.mu)]  # fmt: skip
        for run in range(args.runs):
            for kind in CONTENDERS:
                out = subprocess.run(
                    [sys.executable, __file__, "--only", kind, "--model-dir", model_dir, "--out-dir", f"{tmp}/r{run}",
                     *passthrough], capture_output=True, text=True,
                )  # fmt: skip
                lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
                if out.returncode != 0 or not lines:
                    raise SystemExit(f"{kind} run failed:\n{out.stderr[-3000:]}")
                results[kind].append(json.loads(lines[-1][len("RESULT "):]))
                print(f"run {run + 1}/{args.runs} {kind}: {results[kind][-1]['step_s']:.3f} s/step", flush=True)

    base = statistics.median(r["step_s"] for r in results["mhpo"])
    import torch

    print(f"\nRL step time, tiny Llama (hidden {args.hidden_size}, {args.num_layers} layers), {args.batch} completions "
          f"(G = {args.group}) x <= {args.tokens} tokens, mu = {args.mu}, CPU, {torch.get_num_threads()} threads, "
          f"median of {args.runs} runs x {args.steps} steps")  # fmt: skip
    print(f"{'contender':<10} {'s/step':>8} {'x mhpo':>7} {'tokens/step':>12} {'tokens/s':>9} {'peak MiB':>9}")
    for kind in CONTENDERS:
        step = statistics.median(r["step_s"] for r in results[kind])
        tok = statistics.median(r["tokens_per_step"] for r in results[kind])
        peak = statistics.median(r["peak_mib"] for r in results[kind])
        print(f"{kind:<10} {step:>8.3f} {step / base:>7.2f} {tok:>12.0f} {tok / step:>9.0f} {peak:>9.0f}")


if __name__ == "__main__":
    main()
