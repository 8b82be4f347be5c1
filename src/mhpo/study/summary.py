"""Per-run summaries (final and held-out accuracy, reward per update, stability indicators) and
the markdown table of a comparison: mean ± 95% interval over seeds, and paired differences
against GRPO."""

from __future__ import annotations

import math
import statistics

from .runs import Run
from .stats import first_reaching, mean_ci, spikes


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


def group(runs: list[Run]) -> dict[str, list[Run]]:
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
    by_label = group(runs)
    labels = order_labels(list(by_label), order)
    by_seed = {label: {r.seed: summarise(r, threshold) for r in by_label[label]} for label in labels}
    summaries = {label: [by_seed[label][seed] for seed in sorted(by_seed[label])] for label in labels}
    seeds = sorted({r.seed for r in runs})
    start = [s["accuracy_start"] for rows in summaries.values() for s in rows]
    lines = [
        f"{len(runs)} runs: {len(labels)} configurations x seeds {', '.join(map(str, seeds))}. "
        f"Values are mean ± 95% interval over seeds (t distribution). Held-out accuracy before RL "
        f"(greedy; after the warm start, where the model has one): {format_ci(start, 3)}. Steps to threshold: first step whose 5-step running "
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
