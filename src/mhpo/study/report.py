"""`mhpo report`: a summary table and plots from saved runs (metrics.jsonl + config.yaml)."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import statistics
from typing import Any

from ..train.runlog import atomic_write_text, read_metrics
from .stats import first_reaching, mean_ci, spikes


@dataclasses.dataclass
class Run:
    label: str
    seed: int
    directory: pathlib.Path
    config: dict[str, Any]
    records: list[dict[str, Any]]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        rows = [(r["step"], r[key]) for r in self.records if r.get(key) is not None and r.get("step", 0) >= 1]
        return [s for s, _ in rows], [float(v) for _, v in rows]

    def eval_series(self, key: str) -> tuple[list[int], list[float]]:
        rows = [(r["step"], r[key]) for r in self.records if r.get(key) is not None]
        return [s for s, _ in rows], [float(v) for _, v in rows]


# Trainer loss options that a compared variant may set besides the objective's hyperparameters
# (hpo@hysteresis=0); they are part of a run's label.
VARIANT_OPTIONS = ("hysteresis", "aggregation", "advantage_scale", "alpha_min")


def run_label(config: dict[str, Any]) -> str:
    """objective, plus its non-default hyperparameters and loss options, e.g.
    ``mhpo@use_dhp=False`` or ``hpo@hysteresis=0``."""
    hp = dict(config.get("hp") or {})
    hp.update({k: config[k] for k in VARIANT_OPTIONS if config.get(k) is not None})
    return config["objective"] + "".join(f"@{k}={v}" for k, v in sorted(hp.items()))


def load_run(directory: str | pathlib.Path) -> Run | None:
    """The run in ``directory``; None when it holds no run (no config.yaml, or nothing logged).
    A run that cannot be read is a ValueError saying why, and one that stopped before its last
    step (it crashed, or is still training) an `Unfinished` error: neither is a row of a report."""
    import yaml

    directory = pathlib.Path(directory)
    config_path = directory / "config.yaml"
    if not config_path.exists():
        return None
    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"its config.yaml cannot be read ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict) or not isinstance(config.get("objective"), str):
        raise ValueError("its config.yaml is not a training configuration (no objective)")
    records = read_metrics(directory / "metrics.jsonl")
    if not records:
        return None
    last = max(int(r.get("step", 0)) for r in records)
    steps = config.get("steps")
    if not (directory / "done").exists() and isinstance(steps, int) and last < steps:
        raise Unfinished(f"unfinished: it stopped at step {last} of {steps} (crashed, or still training; "
                         "mhpo train --resume continues it)")  # fmt: skip
    return Run(run_label(config), int(config.get("seed", 0)), directory, config, records)


class Unfinished(ValueError):
    """A run that has not reached its last step."""


def find_runs(paths: list[str | pathlib.Path], *, left_out: list[tuple[pathlib.Path, str]] | None = None) -> list[Run]:
    """Runs in the given directories or anywhere below them, or in CSV files from `export_csv`,
    labelled by every option that differs between them (`label_runs`). Unfinished and broken
    runs are left out, each with its reason in ``left_out`` (or, without it, on stderr)."""
    import sys

    runs = []
    for path in paths:
        path = pathlib.Path(path)
        if path.suffix == ".csv":
            runs += load_csv(path)
            continue
        if not path.exists():
            raise ValueError(f"{path} does not exist; give run directories, a study directory or a runs.csv file.")
        candidates = [path] if (path / "config.yaml").exists() else sorted(p.parent for p in path.rglob("config.yaml"))
        for candidate in candidates:
            try:
                run = load_run(candidate)
            except ValueError as error:
                if left_out is None:
                    print(f"report: left out {candidate}: {error}", file=sys.stderr)
                else:
                    left_out.append((candidate, str(error)))
                continue
            if run is not None:
                runs.append(run)
    label_runs(runs)
    return runs


def distinguishing_options(runs: list[Run]) -> list[str]:
    """The options (besides objective, its variant options and seed) whose values differ
    between the runs read from directories: a run's identity is its whole configuration."""
    from ..train.config import NOT_IDENTITY, TrainConfig

    full = [TrainConfig.from_dict(r.config).with_absolute_paths().to_dict() for r in runs if r.directory.suffix != ".csv"]
    shown = {"objective", "hp", "seed", *VARIANT_OPTIONS, *NOT_IDENTITY}
    return [k for k in (full[0] if full else {}) if k not in shown and len({repr(c[k]) for c in full}) > 1]


def label_runs(runs: list[Run]) -> list[str]:
    """Extend each directory run's label by the options that tell it apart from the others,
    e.g. ``grpo (lr=0.001)``; return those options. Two runs with the same label and seed are
    the same configuration twice: refused, since a report row would silently take one."""
    options = distinguishing_options(runs)
    for run in runs:
        if options and run.directory.suffix != ".csv":
            values = {k: run.config.get(k, _default(k)) for k in options}
            run.label = f"{run_label(run.config)} ({', '.join(f'{k}={v}' for k, v in values.items())})"
    seen: dict[tuple[str, int], Run] = {}
    for run in runs:
        other = seen.setdefault((run.label, run.seed), run)
        if other is not run:
            raise ValueError(
                f"{other.directory} and {run.directory} are both `{run.label}` with seed {run.seed}: the same "
                "configuration twice. Report them separately, or pass only one of them."
            )
    return options


def _default(name: str) -> Any:
    from ..train.config import TrainConfig

    return getattr(TrainConfig(), name)


# Per-step metrics kept in the compact CSV: what the report's tables and plots read, plus a
# few that explain them. Objective-specific metrics stay in each run's metrics.jsonl.
CSV_KEYS = [
    "reward/mean", "reward/std", "reward/zero_variance_frac", "eval/accuracy", "eval/avg@k",
    "grad_norm/max", "grad_norm/mean", "entropy/mean", "ratio/max", "ratio/min", "ratio/mean",
    "log_ratio/abs_mean", "kl/old_k3", "clip/low_frac", "clip/high_frac", "grad_weight/mean",
    "length/mean", "length/truncated_frac", "loss", "time/step", "time/eval", "grad_norm/clipped_frac",
]  # fmt: skip


def export_csv(runs: list[Run], path: str | pathlib.Path) -> pathlib.Path:
    """One row per run and step (training and evaluation records of a step merged), the columns
    in ``CSV_KEYS`` with 6 significant digits; ``mhpo report FILE.csv`` rebuilds the report."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "seed", "step", *CSV_KEYS])
    for run in sorted(runs, key=lambda r: (r.label, r.seed)):
        merged: dict[int, dict[str, Any]] = {}
        for record in run.records:
            merged.setdefault(int(record.get("step", 0)), {}).update(record)
        for step in sorted(merged):
            row = merged[step]
            cells = ["" if row.get(k) is None else f"{float(row[k]):.6g}" for k in CSV_KEYS]
            writer.writerow([run.label, run.seed, step, *cells])
    path = pathlib.Path(path)
    atomic_write_text(path, buffer.getvalue())
    return path


def load_csv(path: str | pathlib.Path) -> list[Run]:
    """Runs from a CSV written by `export_csv` (empty cells are missing values)."""
    import csv

    path = pathlib.Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist.")
    runs: dict[tuple[str, int], Run] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"run", "seed", "step"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} is not a runs CSV from `mhpo report --csv`: no column(s) {', '.join(sorted(missing))}.")
        for line, row in enumerate(reader, 2):
            try:
                key = (row["run"], int(row["seed"]))
                record = {"step": int(row["step"])}
                record.update({k: float(v) for k, v in row.items() if k not in ("run", "seed", "step") and v not in ("", None)})
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line}: {error}") from None
            if key not in runs:
                objective = key[0].split("@")[0].split(" ")[0]
                runs[key] = Run(key[0], key[1], path, {"objective": objective, "seed": key[1]}, [])
            runs[key].records.append(record)
    return list(runs.values())


def _last_mean(values: list[float], fraction: float = 0.1, minimum: int = 5) -> float:
    if not values:
        return math.nan
    tail = values[-max(minimum, int(len(values) * fraction)) :]
    return statistics.fmean(tail)


def summarise(run: Run, threshold: float) -> dict[str, float | None]:
    steps, reward = run.series("reward/mean")
    _, grad = run.series("grad_norm/max")
    _, entropy = run.series("entropy/mean")
    _, ratio = run.series("ratio/max")
    _, length = run.series("length/mean")
    _, clipped = run.series("grad_norm/clipped_frac")
    _, accuracy = run.eval_series("eval/accuracy")
    _, avg_k = run.eval_series("eval/avg@k")
    reached = first_reaching(steps, reward, threshold)
    return {
        "final_reward": _last_mean(reward),
        "accuracy_start": accuracy[0] if accuracy else math.nan,
        "accuracy_final": accuracy[-1] if accuracy else math.nan,
        "avg_k_final": avg_k[-1] if avg_k else math.nan,
        "reward_per_update": statistics.fmean(reward) if reward else math.nan,
        # the same over the first half of the run: how fast learning starts
        "reward_per_update_early": statistics.fmean(reward[: max(1, len(reward) // 2)]) if reward else math.nan,
        "steps_to_threshold": float(reached) if reached is not None else math.nan,
        "grad_spikes": float(spikes(grad)),
        "final_entropy": _last_mean(entropy),
        "max_ratio": max(ratio) if ratio else math.nan,
        "final_length": _last_mean(length),
        # share of the run's optimizer steps whose gradient was clipped (n/a in runs logged before it existed)
        "clipped_frac": statistics.fmean(clipped) if clipped else math.nan,
        "steps": float(steps[-1]) if steps else 0.0,
    }


COLUMNS = [
    ("accuracy_final", "held-out acc. (greedy)", 3),
    ("avg_k_final", "held-out avg@k", 3),
    ("final_reward", "final reward", 3),
    ("reward_per_update", "reward per update (AUC/steps)", 3),
    ("steps_to_threshold", "steps to threshold", 1),
    ("grad_spikes", "grad-norm spikes", 1),
    ("final_entropy", "final entropy", 3),
    ("max_ratio", "largest ratio", 2),
    ("final_length", "response length", 1),
    ("clipped_frac", "clipped steps", 2),
]


def format_ci(values: list[float], digits: int = 3) -> str:
    mean, half = mean_ci(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def order_labels(labels: list[str], preferred: list[str] | None) -> list[str]:
    # Variants are written NAME@KEY=value on the command line and labelled with Python's
    # spelling of the value (false -> False), so the match ignores case.
    preferred = [p.lower() for p in preferred or []]
    return sorted(labels, key=lambda l: (preferred.index(l.lower()) if l.lower() in preferred else len(preferred), l))


def _group(runs: list[Run]) -> dict[str, list[Run]]:
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    return by_label


PAIRED = [("accuracy_final", "Δ held-out acc."), ("reward_per_update", "Δ reward per update"),
          ("reward_per_update_early", "Δ reward per update, first half"),
          ("final_reward", "Δ final reward"), ("grad_spikes", "Δ grad-norm spikes"),
          ("final_entropy", "Δ final entropy")]  # fmt: skip


def summary_table(runs: list[Run], *, threshold: float = 0.3, order: list[str] | None = None) -> str:
    """Markdown: one row per objective (mean ± 95% interval over seeds) and, when ``grpo`` is
    among the runs, the paired differences against it (same seed)."""
    by_label = _group(runs)
    labels = order_labels(list(by_label), order)
    by_seed = {label: {r.seed: summarise(r, threshold) for r in by_label[label]} for label in labels}
    summaries = {label: [by_seed[label][seed] for seed in sorted(by_seed[label])] for label in labels}
    seeds = sorted({r.seed for r in runs})
    start = [s["accuracy_start"] for rows in summaries.values() for s in rows]
    lines = [
        f"{len(runs)} runs: {len(labels)} configurations x seeds {', '.join(map(str, seeds))}. "
        f"Values are mean ± 95% interval over seeds (t distribution). Warm-start held-out accuracy "
        f"(greedy, before RL): {format_ci(start, 3)}. Steps to threshold: first step whose 5-step running "
        f"mean reward reaches {threshold} (n/a if never; runs that never reach it are left out of the mean).",
        "",
        "| objective | seeds | " + " | ".join(name for _, name, _ in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for label in labels:
        rows = summaries[label]
        cells = []
        for key, _, digits in COLUMNS:
            values = [r[key] for r in rows]
            cell = format_ci(values, digits)
            if key == "steps_to_threshold":
                reached = sum(math.isfinite(v) for v in values)
                cell += f" ({reached}/{len(values)} reached)"
            cells.append(cell)
        lines.append(f"| `{label}` | {len(rows)} | " + " | ".join(cells) + " |")

    baseline = "grpo" if "grpo" in by_label else None
    if baseline and len(labels) > 1:
        lines += ["", f"Paired differences against `{baseline}` (same seed: same warm start and prompts):", "",
                  "| objective | pairs | " + " | ".join(name for _, name in PAIRED) + " |",
                  "|---|---|" + "---|" * len(PAIRED)]  # fmt: skip
        base = by_seed[baseline]
        for label in labels:
            if label == baseline:
                continue
            pairs = [(row, base[seed]) for seed, row in by_seed[label].items() if seed in base]
            cells = [format_ci([a[k] - b[k] for a, b in pairs], 1 if k == "grad_spikes" else 3) for k, _ in PAIRED]
            lines.append(f"| `{label}` | {len(pairs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        import sys

        log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    left_out: list[tuple[pathlib.Path, str]] = []
    runs = find_runs(paths, left_out=left_out)
    if not runs:
        reasons = "".join(f"\n  - {path}: {reason}" for path, reason in left_out)
        raise ValueError(f"no finished runs (config.yaml + metrics.jsonl or runs.csv) under "
                         f"{', '.join(map(str, paths))}.{reasons}")  # fmt: skip
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_label = _group(runs)
    labels = order_labels(list(by_label), order)
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes, ""]
    differing = distinguishing_options(runs)
    if differing:
        lines += [f"The runs differ in {', '.join(f'`{k}`' for k in differing)} besides the objective: each "
                  "configuration is its own row.", ""]  # fmt: skip
    lines += [summary_table(runs, threshold=threshold, order=order)]

    if sweep:
        from .sweep import plot_sweep, sweep_table

        table, grid = sweep_table(runs, sweep, threshold, order=order)
        plot_sweep(grid, out / "sweep.png", sweep, order=order)
        lines += ["", f"## Where each objective breaks: {sweep}", "", table, "", "![sweep](sweep.png)"]
    images = plot_runs(by_label, labels, out)
    if images:
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in images]
    else:
        lines += ["", f"{len(labels)} configurations are too many for per-step plots (at most "
                  f"{MAX_SERIES * MAX_FACETS}); the per-step metrics are in the runs' logs or CSV."]  # fmt: skip
    sources = sorted({str(r.directory) for r in runs if r.directory.suffix == ".csv"})
    if sources:
        lines += ["", "Per-step metrics of every run: " + ", ".join(f"`{s}`" for s in sources) + "."]
    listed = [r for label in labels for r in sorted(by_label[label], key=lambda r: r.seed) if r.directory.suffix != ".csv"]
    if listed:
        lines += ["", "## Runs", "", "| objective | seed | directory |", "|---|---|---|"]
        lines += [f"| `{r.label}` | {r.seed} | `{r.directory}` |" for r in listed]
    if left_out:
        lines += ["", "## Left out", "", "| directory | why |", "|---|---|"]
        lines += [f"| `{path}` | {reason} |" for path, reason in left_out]
        for path, reason in left_out:
            log(f"report: left out {path}: {reason}")
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _band(runs: list[Run], key: str, eval_key: bool = False):
    """Mean and min/max over seeds on the steps every seed has."""
    series = [r.eval_series(key) if eval_key else r.series(key) for r in runs]
    common = sorted(set.intersection(*(set(s) for s, _ in series))) if series else []
    if not common:
        return [], [], [], []
    table = [dict(zip(s, v)) for s, v in series]
    values = [[t[step] for t in table] for step in common]
    return common, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def _smooth(values: list[float], window: int) -> list[float]:
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


MAX_SERIES = 6  # lines per panel; more configurations are split into facets
MAX_FACETS = 4  # beyond this many facets the per-step plots are not drawn (a sweep: see sweep.png)


def facets(labels: list[str], baseline: str | None = "grpo") -> list[list[str]]:
    """Groups of at most MAX_SERIES labels; the baseline (GRPO) in every group, as a reference.

    >>> facets(["a", "b", "grpo"])
    [['a', 'b', 'grpo']]
    >>> [len(f) for f in facets([f"o{i}" for i in range(11)] + ["grpo"])]
    [4, 5, 5]
    """
    if len(labels) <= MAX_SERIES:
        return [labels]
    others = [label for label in labels if label != baseline]
    size = MAX_SERIES - 1 if baseline in labels else MAX_SERIES
    count = math.ceil(len(others) / size)  # as few facets as fit, of sizes as even as can be
    groups = [others[len(others) * i // count : len(others) * (i + 1) // count] for i in range(count)]
    return [([baseline] if baseline in labels else []) + group for group in groups]


PANELS = {
    "curves.png": [
        ("reward/mean", "training reward (5-step mean)", False, 5, False),
        ("eval/accuracy", "held-out accuracy (greedy)", True, 1, False),
        ("eval/avg@k", "held-out avg@k (sampled)", True, 1, False),
    ],
    "stability.png": [
        ("grad_norm/max", "gradient norm before clipping (max per step)", False, 1, True),
        ("entropy/mean", "policy entropy (nats/token)", False, 1, False),
        ("ratio/max", "largest importance ratio", False, 1, True),
        ("ratio/min", "smallest importance ratio", False, 1, True),
        ("length/mean", "response length (tokens)", False, 1, False),
        ("kl/old_k3", "KL(π_old ‖ π_θ), k3", False, 1, True),
        ("grad_norm/clipped_frac", "share of optimizer steps clipped (5-step mean)", False, 5, False),
    ],
}


def plot_runs(by_label: dict[str, list[Run]], labels: list[str], out: pathlib.Path) -> list[str]:
    """curves.png and stability.png: each metric against the step, at most MAX_SERIES
    configurations per panel (more are split into facets, one band of panels each, GRPO in
    every facet). With more than MAX_FACETS facets nothing is drawn (an empty list)."""
    groups = facets(labels)
    if len(groups) > MAX_FACETS:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Distinct colours within a facet (tab10, in facet order: GRPO first, so always the same blue).
    tab10 = plt.get_cmap("tab10")
    written = []
    for name, specs in PANELS.items():
        cols = min(4, len(specs))
        rows_per = math.ceil(len(specs) / cols)
        fig, axes = plt.subplots(rows_per * len(groups), cols, figsize=(4.6 * cols, 3.4 * rows_per * len(groups)),
                                 squeeze=False)  # fmt: skip
        for f, group in enumerate(groups):
            block = axes[f * rows_per : (f + 1) * rows_per].flat
            colour_of = {label: tab10(i % 10) for i, label in enumerate(group)}
            for ax, spec in zip(block, specs):
                if not _panel(ax, spec, by_label, group, colour_of):
                    ax.text(0.5, 0.5, "not logged by these runs", ha="center", va="center", transform=ax.transAxes,
                            color="grey")  # fmt: skip
            for ax in list(axes[f * rows_per : (f + 1) * rows_per].flat)[len(specs) :]:
                ax.set_visible(False)
            handles, texts = next(((h, t) for h, t in (ax.get_legend_handles_labels() for ax in
                                   axes[f * rows_per : (f + 1) * rows_per].flat) if h), ([], []))  # fmt: skip
            if handles:
                axes[f * rows_per, 0].legend(handles, texts, fontsize=7, loc="best", framealpha=0.8)
        fig.suptitle("mean over seeds; bands span the seeds (min to max)"
                     + (f"; {len(groups)} facets of at most {MAX_SERIES}" if len(groups) > 1 else ""), fontsize=10)  # fmt: skip
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title
        tmp = out / f".{name}.tmp"
        fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        tmp.replace(out / name)
        written.append(name)
    return written


def _panel(ax, spec, by_label: dict[str, list[Run]], labels: list[str], colour_of: dict) -> bool:
    """One metric of ``labels`` against the step; False when none of them logged it."""
    key, title, is_eval, window, log = spec
    positive = drawn = False
    for label in labels:
        steps, mean, low, high = _band(by_label[label], key, is_eval)
        if not steps:
            continue
        if window > 1:
            mean, low, high = (_smooth(v, window) for v in (mean, low, high))
        positive = positive or any(v > 0 for v in mean)
        drawn = True
        ax.plot(steps, mean, color=colour_of[label], lw=1.6, label=f"{label} (n={len(by_label[label])})",
                marker="o" if is_eval else None, ms=3)  # fmt: skip
        if len(by_label[label]) > 1:
            ax.fill_between(steps, low, high, color=colour_of[label], alpha=0.15, lw=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("RL step")
    if log and positive:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    return drawn
