"""Small statistics for reports: means with t-based 95% intervals, spikes, thresholds."""

from __future__ import annotations

import math
import statistics

# Two-sided 95% Student-t critical values by degrees of freedom (1..30); 1.96 beyond.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]  # fmt: skip


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (t distribution; 0 for one value).

    >>> mean_ci([1.0, 2.0, 3.0])   # sd 1, se 1/√3, t(2) = 4.303
    (2.0, 2.484...)
    """
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, 0.0
    df = len(values) - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def spikes(values: list[float], factor: float = 5.0, warmup: int = 5) -> int:
    """Steps whose value exceeds ``factor`` times the median of all earlier steps."""
    count = 0
    for i, value in enumerate(values):
        history = [v for v in values[:i] if v is not None and math.isfinite(v)]
        if len(history) >= warmup and value is not None and value > factor * statistics.median(history):
            count += 1
    return count


def first_reaching(steps: list[int], values: list[float], threshold: float, window: int = 5) -> int | None:
    """First step at which the mean over the last ``window`` steps (a full window, so one lucky
    early batch does not count) reaches ``threshold``."""
    for i in range(window - 1, len(values)):
        recent = [v for v in values[i - window + 1 : i + 1] if v is not None]
        if len(recent) == window and statistics.fmean(recent) >= threshold:
            return steps[i]
    return None
