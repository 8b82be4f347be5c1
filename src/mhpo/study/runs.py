"""Runs of a study: found in run directories (config.yaml + metrics.jsonl) or read back from
the compact CSV form, each labelled by every option that tells it apart from the others."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from ..files import atomic_write_text
from ..train.config import NOT_IDENTITY, TrainConfig
from ..train.rundir import CONFIG, DONE, METRICS, saved_config
from ..train.runlog import read_metrics


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
    directory = pathlib.Path(directory)
    config = saved_config(directory)
    records = read_metrics(directory / METRICS) if config is not None else []
    if not records:
        return None
    last = max(int(r.get("step", 0)) for r in records)
    steps = config.get("steps")
    if not (directory / DONE).exists() and isinstance(steps, int) and last < steps:
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
        candidates = [path] if (path / CONFIG).exists() else sorted(p.parent for p in path.rglob(CONFIG))
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
    return getattr(TrainConfig(), name)


# Per-step metrics kept in the compact CSV: what the report's tables and plots read, plus a
# few that explain them. Objective-specific metrics stay in each run's metrics.jsonl.
CSV_KEYS = [
    "reward/mean", "reward/std", "reward/zero_variance_frac", "eval/accuracy", "eval/avg@k",
    "grad_norm/max", "grad_norm/mean", "entropy/mean", "ratio/max", "ratio/min", "ratio/mean",
    "log_ratio/abs_mean", "kl/old_k3", "clip/low_frac", "clip/high_frac", "grad_weight/mean",
    "length/mean", "length/truncated_frac", "loss", "time/step", "time/eval", "grad_norm/clipped_frac",
    # what MHPO, M2PO and HPO cut or damp instead of clipping (empty for other objectives)
    "mhpo/survival", "m2po/masked_frac", "hpo/alpha",
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
