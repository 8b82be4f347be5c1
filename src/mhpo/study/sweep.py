"""Where each objective breaks: runs that differ in one option (the learning rate), summarised
as the largest value at which held-out accuracy still ends above the warm start, and one plot
of accuracy and gradient norm against that option."""

from __future__ import annotations

import math
import pathlib
import re
import statistics

from ..files import atomic_path
from .runs import Run
from .summary import format_ci, order_labels, summarise


def option_value(run: Run, option: str) -> float:
    """The run's value of ``option``: from its configuration, or from a label such as
    ``grpo (lr=0.0004)`` (runs read back from a CSV carry only their label)."""
    if option in run.config:
        return float(run.config[option])
    found = re.search(rf"[(,] ?{re.escape(option)}=([^,)]+)", run.label)
    if not found:
        raise ValueError(f"run {run.label!r} (seed {run.seed}) does not say its {option}.")
    return float(found.group(1))


def base_label(run: Run, option: str) -> str:
    """The label without ``option``: ``grpo (lr=0.0004)`` -> ``grpo``."""
    label = re.sub(rf"(, )?{re.escape(option)}=[^,)]+", "", run.label)
    return label.replace("(, ", "(").replace(" ()", "")


def sweep_table(runs: list[Run], option: str = "lr", threshold: float = 0.3, order: list[str] | None = None):
    """Per objective and value: final held-out accuracy minus the warm start's (mean ± 95%
    interval over seeds), and the largest value whose mean stays above the warm start.
    Returns (markdown, {objective: {value: [(accuracy_final, accuracy_start, median grad norm)]}})."""
    grid: dict[str, dict[float, list[tuple[float, float, float]]]] = {}
    for run in runs:
        summary = summarise(run, threshold)
        _, norms = run.series("grad_norm/max")
        grid.setdefault(base_label(run, option), {}).setdefault(option_value(run, option), []).append(
            (summary["accuracy_final"], summary["accuracy_start"], statistics.median(norms) if norms else math.nan)
        )
    values = sorted({v for cells in grid.values() for v in cells})
    labels = order_labels(list(grid), order)
    lines = [
        f"Held-out greedy accuracy at the end minus the warm start's, per {option} (mean ± 95% interval over seeds); "
        f"the last column is the largest {option} whose mean stays above the warm start (none: not even the smallest).",
        "",
        "| objective | " + " | ".join(f"{option} = {v:g}" for v in values) + f" | largest {option} above the warm start |",
        "|---|" + "---|" * (len(values) + 1),
    ]
    for label in labels:
        cells, above = [], None
        for value in values:
            rows = grid[label].get(value, [])
            gains = [final - start for final, start, _ in rows]
            cells.append(format_ci(gains, 3) if gains else "n/a")
            if gains and statistics.fmean(gains) > 0:
                above = value
        lines.append(f"| `{label}` | " + " | ".join(cells) + f" | {'none' if above is None else f'{above:g}'} |")
    return "\n".join(lines), grid


def plot_sweep(grid: dict, out: str | pathlib.Path, option: str = "lr", order: list[str] | None = None) -> pathlib.Path:
    """One figure: final accuracy minus the warm start's, and the median gradient norm, against ``option``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = order_labels(list(grid), order)
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, label in enumerate(labels):
        values = sorted(grid[label])
        gains = [statistics.fmean(f - s for f, s, _ in grid[label][v]) for v in values]
        norms = [statistics.fmean(n for _, _, n in grid[label][v]) for v in values]
        left.plot(values, gains, marker="o", color=colours(i % colours.N), label=label)
        right.plot(values, norms, marker="o", color=colours(i % colours.N), label=label)
    left.axhline(0, color="black", lw=0.8)
    left.set_ylabel("held-out accuracy at the end − warm start")
    right.set_ylabel("gradient norm before clipping\n(median over steps of each step's largest)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel(option)
        ax.grid(alpha=0.3)
    positive = [n for cells in grid.values() for rows in cells.values() for _, _, n in rows if n > 0]
    if positive:
        # Logarithmic above the smallest positive norm, linear below it: a run whose policy
        # collapsed (every reward 0, so no gradient) has norm 0 and stays on the plot.
        from matplotlib.ticker import FormatStrFormatter, NullFormatter

        right.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(min(positive))))
        right.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        right.yaxis.set_minor_formatter(NullFormatter())
        right.set_ylim(bottom=0)
    handles, names = left.get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8)
    fig.suptitle("mean over seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    path = pathlib.Path(out)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
