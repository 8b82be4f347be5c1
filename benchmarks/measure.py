"""Shared measurement helpers: peak resident memory of a call on Linux, and medians."""

from __future__ import annotations

import ctypes
import statistics
from collections.abc import Callable


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def release_large_blocks() -> None:
    """Make glibc mmap (and so return at free) every block above 64 KiB, so that the
    resident high-water mark follows live tensor memory."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 64 * 1024)


def peak_memory(fn: Callable[[], object], samples: int = 3) -> int:
    """Peak resident bytes above the pre-call level during ``fn()``, median of ``samples``."""
    peaks = []
    for _ in range(samples):
        base = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current RSS
        fn()
        peaks.append(_status("VmHWM") - base)
    return int(statistics.median(peaks))
