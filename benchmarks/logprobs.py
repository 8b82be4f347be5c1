"""Chunked log-probs against plain log_softmax + gather: time and peak memory of fwd+bwd.

    .venv/bin/python benchmarks/logprobs.py                  # V = 49,152, 8 x 512 tokens, H = 576
    .venv/bin/python benchmarks/logprobs.py --repeats 5 --chunk 512

Both paths start from the final hidden states (N, H) and the LM-head weight (V, H) — the
shapes of SmolLM2-135M — and return the log-probabilities of the chosen tokens; the backward
pass reaches both the hidden states and the weight. Runs alternate between the two paths;
the table reports medians and the ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from measure import peak_memory, release_large_blocks

from mhpo.train.logprobs import plain_token_logprobs, token_logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=49_152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=None, help="rows per chunk (default: about 128 MiB)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    release_large_blocks()
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.batch, args.length, args.hidden, generator=gen)
    weight = torch.randn(args.vocab, args.hidden, generator=gen) * 0.02
    targets = torch.randint(0, args.vocab, (args.batch, args.length), generator=gen)
    upstream = torch.randn(args.batch, args.length, generator=gen)

    def run(path: str) -> None:
        h = hidden.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        if path == "plain":
            logp = plain_token_logprobs(h, w, targets)
        else:
            logp, _ = token_logprobs(h, w, targets, chunk=args.chunk)
        (logp * upstream).sum().backward()

    paths = ("plain", "chunked")
    for path in paths:
        run(path)  # warm-up
    times: dict[str, list[float]] = {p: [] for p in paths}
    for repeat in range(args.repeats):
        for path in paths if repeat % 2 == 0 else paths[::-1]:
            start = time.perf_counter()
            run(path)
            times[path].append(time.perf_counter() - start)
    memory = {p: peak_memory(lambda p=p: run(p), samples=1) for p in paths}
    inputs = (hidden.numel() + weight.numel()) * 4 / 2**20

    print(
        f"token log-probs fwd+bwd: N = {args.batch} x {args.length} tokens, V = {args.vocab}, H = {args.hidden}, "
        f"float32, chunk {args.chunk}, {torch.get_num_threads()} threads, median of {args.repeats} "
        f"(inputs {inputs:.0f} MiB, cloned inside every measured call; their gradients are part of the peak)"
    )
    print(f"{'path':<8} {'time s':>8} {'peak MiB':>9}")
    for path in paths:
        print(f"{path:<8} {statistics.median(times[path]):>8.2f} {memory[path] / 2**20:>9.0f}")
    t_ratio = statistics.median(times["chunked"]) / statistics.median(times["plain"])
    m_ratio = memory["chunked"] / memory["plain"]
    print(f"chunked / plain: time {t_ratio:.2f}x, peak memory {m_ratio:.2f}x")


if __name__ == "__main__":
    main()
