"""Per-step plots of a comparison: curves.png (reward, held-out accuracy) and stability.png
(gradient norm, entropy, ratios, length, KL, clipping), mean over seeds with min-max bands."""

from __future__ import annotations

import math
import pathlib
import statistics

from ..files import atomic_path
from .runs import Run


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
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
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
