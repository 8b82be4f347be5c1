"""Decoding speed: time per decode step of SmolLM2-135M-Instruct on 32 rows (4 prompts x G = 8),
in float32, in bfloat16 as the trainer samples (each linear weight cast once per rollout, keys
and values cached in bfloat16), and in bfloat16 with autocast casting the weights at every call
and a float32 cache (the sampler before), side by side, alternating, median over repeats.

    .venv/bin/python benchmarks/decode.py
    .venv/bin/python benchmarks/decode.py --repeats 5 --tokens 48

Greedy decoding, so the two bfloat16 samplers produce the same tokens (tested in
tests/test_models.py); the float32 one may stop at other steps, so times are per decode step.
The last column is a decode step's time over the time of its matmuls (`aten::mm` per step in
one torch.profiler run of the same rollout, prefill included): how far decoding is from its
matmul work.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from mhpo.tasks import Arithmetic, ArithmeticConfig
from mhpo.train import kvcache
from mhpo.train.models import ModelConfig, Policy, load_policy
from mhpo.train.rollout import generate


@contextlib.contextmanager
def sampler_before():
    """The bfloat16 sampler before: the model itself under autocast, keys and values in float32."""
    from transformers.cache_utils import DynamicCache

    original_sampling, original_cache = Policy.sampling, kvcache.LowPrecisionCache
    Policy.sampling = lambda self: contextlib.nullcontext(self.model)
    kvcache.LowPrecisionCache = lambda dtype, **kwargs: DynamicCache(**kwargs)
    try:
        yield
    finally:
        Policy.sampling, kvcache.LowPrecisionCache = original_sampling, original_cache


def per_step(policy: Policy, prompts: list[list[int]], tokens: int) -> float:
    rollout = generate(policy, prompts, max_new_tokens=tokens, temperature=0.0)
    steps = max(len(c) for c in rollout.completions)
    return rollout.decode_s / max(steps - 1, 1)


def matmul_per_step(policy: Policy, prompts: list[list[int]], tokens: int, before: bool) -> float:
    """Seconds of `aten::mm` per generated step, from one profiled rollout (prefill included)."""
    from torch.profiler import ProfilerActivity, profile

    with sampler_before() if before else contextlib.nullcontext():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            rollout = generate(policy, prompts, max_new_tokens=tokens, temperature=0.0)
    mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key == "aten::mm") / 1e6
    return mm / max(len(c) for c in rollout.completions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    task = Arithmetic(ArithmeticConfig(num_operands=3, max_operand=20))
    policies = {dtype: load_policy(ModelConfig("smollm2-135m", dtype=dtype)) for dtype in ("float32", "bfloat16")}
    prompts = [policies["float32"].tokenizer.prompt_ids(p) for p in task.problems("train", 4, seed=0) for _ in range(8)]
    contenders = {
        "float32": (policies["float32"], False),
        "bfloat16 (cast once, bf16 cache)": (policies["bfloat16"], False),
        "bfloat16 (autocast every call)": (policies["bfloat16"], True),
    }
    for policy, before in contenders.values():  # warm-up
        with sampler_before() if before else contextlib.nullcontext():
            per_step(policy, prompts, 8)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, (policy, before) in contenders.items():
            with sampler_before() if before else contextlib.nullcontext():
                times[name].append(per_step(policy, prompts, args.tokens))
    base = statistics.median(times["float32"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; SmolLM2-135M, 32 rows, <= {args.tokens} "
          f"tokens, greedy, median of {args.repeats}")  # fmt: skip
    print(f"{'sampler':<34} {'ms/step':>8} {'x fp32':>7} {'step / matmuls':>15}")
    for name, (policy, before) in contenders.items():
        median = statistics.median(times[name])
        ratio = median / matmul_per_step(policy, prompts, args.tokens, before)
        print(f"{name:<34} {median * 1e3:>8.1f} {median / base:>7.2f} {ratio:>15.2f}")


if __name__ == "__main__":
    main()
