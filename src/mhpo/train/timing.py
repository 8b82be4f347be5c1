"""Wall time of a step's phases, read once the device has finished the phase's work."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator

import torch


def wall_time(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work (CUDA runs
    asynchronously, so a timer read before that would miss it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Timer:
    """Seconds per named phase, summed over every ``with timer("forward"):`` block.

    >>> timer = Timer(torch.device("cpu"))
    >>> with timer("forward"):
    ...     pass
    >>> sorted(timer.metrics())
    ['time/forward']
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = collections.defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = wall_time(self.device)
        try:
            yield
        finally:
            self.seconds[name] += wall_time(self.device) - start

    def metrics(self) -> dict[str, float]:
        return {f"time/{name}": value for name, value in self.seconds.items()}
