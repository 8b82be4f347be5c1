"""Forward + backward time and peak memory of every objective, as ratios to GRPO.

    .venv/bin/python benchmarks/objectives.py            # (B, T) = (64, 4096) float32, 7 repeats
    .venv/bin/python benchmarks/objectives.py --repeats 15 --batch 32 --length 2048

Each repeat runs every objective once, in a rotated order, so that slow drifts of the
machine (thermal, other load) touch all objectives alike; the table reports medians. Peak
memory is the resident-set high-water mark above the inputs during one forward + backward
(Linux: /proc/self/clear_refs resets the mark; glibc is told to return every large block
to the OS at once, so the mark follows live tensor memory), median of 3 measurements.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from measure import peak_memory, release_large_blocks

import mhpo


def make_inputs(batch: int, length: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=gen) * 4
    logp = old + torch.randn(batch, length, generator=gen) * 0.3
    lengths = torch.randint(length // 4, length + 1, (batch,), generator=gen)
    mask = (torch.arange(length) < lengths.unsqueeze(1)).float()
    advantages = mhpo.group_advantages(torch.randint(0, 2, (batch,), generator=gen).float(), 8)
    return logp, old, advantages, mask


def step(name: str, logp: torch.Tensor, old, advantages, mask) -> None:
    leaf = logp.detach().requires_grad_(True)
    out = mhpo.policy_loss(name, leaf, old, advantages, mask)
    out.loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--objectives", default=",".join(mhpo.list_objectives()))
    args = parser.parse_args()
    release_large_blocks()
    names = args.objectives.split(",")
    if "grpo" not in names:
        names.insert(0, "grpo")
    inputs = make_inputs(args.batch, args.length)
    for name in names:  # warm-up: first-call allocations and dispatch caches
        step(name, *inputs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for name in order:
            start = time.perf_counter()
            step(name, *inputs)
            times[name].append(time.perf_counter() - start)
    memory = {name: peak_memory(lambda n=name: step(n, *inputs)) for name in names}

    from rich.console import Console
    from rich.table import Table

    base_time = statistics.median(times["grpo"])
    table = Table(
        title=f"policy_loss forward+backward, (B, T) = ({args.batch}, {args.length}) float32, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    for column in ("objective", "time ms", "x grpo", "peak MiB", "x grpo"):
        table.add_column(column, justify="left" if column == "objective" else "right")
    for name in names:
        median = statistics.median(times[name])
        table.add_row(
            name,
            f"{median * 1e3:.1f}",
            f"{median / base_time:.2f}",
            f"{memory[name] / 2**20:.1f}",
            f"{memory[name] / memory['grpo']:.2f}",
        )
    Console(width=100).print(table)
    print(f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
