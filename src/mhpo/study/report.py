"""`mhpo report`: a summary table and plots from saved runs (metrics.jsonl + config.yaml)."""

from __future__ import annotations

import os
import pathlib
import sys

from ..files import atomic_write_text
from .plots import MAX_FACETS, MAX_SERIES, plot_runs
from .runs import Run, distinguishing_options, find_runs
from .summary import group, order_labels, summary_table
from .sweep import plot_sweep, sweep_table


def build_report(
    paths: list[str | pathlib.Path],
    out: str | pathlib.Path,
    *,
    threshold: float = 0.3,
    order: list[str] | None = None,
    title: str = "Objective comparison",
    notes: str = "",
    sweep: str | None = None,
    log=None,
) -> pathlib.Path:
    """Write ``report.md`` and PNG plots for the runs found under ``paths`` into ``out``. With
    ``sweep`` (an option the runs differ in, such as ``lr``), also where each objective breaks
    along it: the table of `sweep.sweep_table` and ``sweep.png``. Unfinished and broken runs
    are listed under "Left out" with the reason, and said on stderr."""
    if log is None:
        log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    left_out: list[tuple[pathlib.Path, str]] = []
    runs = find_runs(paths, left_out=left_out)
    if not runs:
        reasons = "".join(f"\n  - {path}: {reason}" for path, reason in left_out)
        raise ValueError(f"no finished runs (config.yaml + metrics.jsonl or runs.csv) under "
                         f"{', '.join(map(str, paths))}.{reasons}")  # fmt: skip
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""] + ([notes, ""] if notes else [])
    differing = distinguishing_options(runs)
    if differing:
        lines += [f"The runs differ in {', '.join(f'`{k}`' for k in differing)} besides the objective: each "
                  "configuration is its own row.", ""]  # fmt: skip
    lines += [summary_table(runs, threshold=threshold, order=order)]
    if sweep:
        table, grid = sweep_table(runs, sweep, threshold, order=order)
        plot_sweep(grid, out / "sweep.png", sweep, order=order)
        lines += ["", f"## Where each objective breaks: {sweep}", "", table, "", "![sweep](sweep.png)"]
    lines += _plots_and_runs(runs, order, out) + _left_out(left_out, log)
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _plots_and_runs(runs: list[Run], order: list[str] | None, out: pathlib.Path) -> list[str]:
    """The report's plots (or why there are none), where its per-step metrics are, and its runs."""
    by_label = group(runs)
    labels = order_labels(list(by_label), order)
    images = plot_runs(by_label, labels, out)
    if images:
        lines = ["", "## Plots", ""] + [f"![{name}]({name})" for name in images]
    else:
        lines = ["", f"{len(labels)} configurations are too many for per-step plots (at most "
                 f"{MAX_SERIES * MAX_FACETS}); the per-step metrics are in the runs' logs or CSV."]  # fmt: skip
    # the CSVs as seen from the report (a link that works wherever the directory is copied)
    sources = sorted({os.path.relpath(r.directory.resolve(), out.resolve()) for r in runs if r.directory.suffix == ".csv"})
    if sources:
        lines += ["", "Per-step metrics of every run: " + ", ".join(f"[`{s}`]({s})" for s in sources) + "."]
    listed = [r for label in labels for r in sorted(by_label[label], key=lambda r: r.seed) if r.directory.suffix != ".csv"]
    if listed:
        lines += ["", "## Runs", "", "| objective | seed | directory |", "|---|---|---|"]
        lines += [f"| `{r.label}` | {r.seed} | `{r.directory}` |" for r in listed]
    return lines


def _left_out(left_out: list[tuple[pathlib.Path, str]], log) -> list[str]:
    if not left_out:
        return []
    for path, reason in left_out:
        log(f"report: left out {path}: {reason}")
    return ["", "## Left out", "", "| directory | why |", "|---|---|"] + [f"| `{p}` | {r} |" for p, r in left_out]
