"""Decoding speed: time per decode step of SmolLM2-135M-Instruct on 32 rows (4 prompts x G = 8),
the static-cache decoder that sampling uses (mhpo/train/decoder.py) against the model's own
Hugging Face forward with its growing cache (the decoder before), side by side, alternating,
median over repeats, in float32 and, on a CPU with native bfloat16 (avx512_bf16 or AMX), in
bfloat16 as the trainer samples (each linear weight cast once per rollout, keys and values
cached in bfloat16).

    .venv/bin/python benchmarks/decode.py
    .venv/bin/python benchmarks/decode.py --repeats 5 --tokens 48 --dtypes float32,bfloat16

Greedy decoding, so both decoders produce the same tokens (tested in tests/test_decoder.py);
times are per decode step. The last column is a decode step's time over the time of its
matmuls (`aten::mm` per step in one torch.profiler run of the same rollout, prefill
included): how far decoding is from its matmul work.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from mhpo.tasks import Arithmetic, ArithmeticConfig
from mhpo.train import rollout
from mhpo.train.models import ModelConfig, Policy, load_policy


def native_bfloat16() -> bool:
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


@contextlib.contextmanager
def decoder_before():
    """Decoding through the Hugging Face forward and its growing cache."""
    original = rollout.make_decoder
    rollout.make_decoder = lambda policy, forward, weights, cache, total: rollout.HFDecoder(forward, cache)
    try:
        yield
    finally:
        rollout.make_decoder = original


def per_step(policy: Policy, prompts: list[list[int]], tokens: int) -> float:
    result = rollout.generate(policy, prompts, max_new_tokens=tokens, temperature=0.0)
    steps = max(len(c) for c in result.completions)
    return result.decode_s / max(steps - 1, 1)


def matmul_per_step(policy: Policy, prompts: list[list[int]], tokens: int, before: bool) -> float:
    """Seconds of `aten::mm` per generated step, from one profiled rollout (prefill included)."""
    from torch.profiler import ProfilerActivity, profile

    with decoder_before() if before else contextlib.nullcontext():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            result = rollout.generate(policy, prompts, max_new_tokens=tokens, temperature=0.0)
    mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key == "aten::mm") / 1e6
    return mm / max(len(c) for c in result.completions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--dtypes", default=None,
                        help="comma-separated (default: float32, plus bfloat16 on a CPU with native bfloat16)")
    args = parser.parse_args()
    dtypes = args.dtypes.split(",") if args.dtypes else ["float32"] + (["bfloat16"] if native_bfloat16() else [])
    task = Arithmetic(ArithmeticConfig(num_operands=3, max_operand=20))
    policies = {dtype: load_policy(ModelConfig("smollm2-135m", dtype=dtype)) for dtype in dtypes}
    first = policies[dtypes[0]]
    prompts = [first.tokenizer.prompt_ids(p) for p in task.problems("train", 4, seed=0) for _ in range(8)]
    contenders = {}
    for dtype in dtypes:
        contenders[f"{dtype}, static cache"] = (policies[dtype], False)
        contenders[f"{dtype}, Hugging Face forward"] = (policies[dtype], True)
    for policy, before in contenders.values():  # warm-up
        with decoder_before() if before else contextlib.nullcontext():
            per_step(policy, prompts, 8)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, (policy, before) in contenders.items():
            with decoder_before() if before else contextlib.nullcontext():
                times[name].append(per_step(policy, prompts, args.tokens))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bfloat16: {native_bfloat16()}; SmolLM2-135M, "
          f"32 rows, <= {args.tokens} tokens, greedy, median of {args.repeats}")  # fmt: skip
    print(f"{'decoder':<36} {'ms/step':>8} {'x before':>9} {'step / matmuls':>15}")
    for name, (policy, before) in contenders.items():
        median = statistics.median(times[name])
        baseline = statistics.median(times[name.replace("static cache", "Hugging Face forward")])
        ratio = median / matmul_per_step(policy, prompts, args.tokens, before)
        print(f"{name:<36} {median * 1e3:>8.1f} {median / baseline:>9.2f} {ratio:>15.2f}")


if __name__ == "__main__":
    main()
