"""`mhpo plot-weights`: every objective's gradient weight w against the ratio r."""

from __future__ import annotations

import math
import pathlib

import torch

from .files import atomic_path
from .loss import gradient_weight
from .objectives import get_objective, list_objectives

TABLE_RATIOS = (0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 10.0)
# A-HPO's alpha depends on the batch; curves show it for a sparse-reward batch with
# three negative completions for each positive one (alpha = n+/n- = 1/3).
ADAPTIVE_EXAMPLE_ALPHA = 1 / 3
# The paper's objectives first, then the clipped family, sequence-level, soft and references.
PLOT_ORDER = (
    "mhpo", "hpo", "a_hpo", "grpo", "dr_grpo", "dapo", "gspo", "gspo_token", "gmpo",
    "sapo", "cispo", "reinforce", "unclipped",
)  # fmt: skip


def _ordered(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (PLOT_ORDER.index(n) if n in PLOT_ORDER else len(PLOT_ORDER), n))


def _curve(name: str, log_ratio: torch.Tensor, sign: float, **hyperparameters) -> torch.Tensor:
    spec = get_objective(name)
    hysteresis = ADAPTIVE_EXAMPLE_ALPHA if spec.hysteresis == "adaptive" else None
    advantages = torch.full_like(log_ratio, sign)
    if spec.selection:  # a selection across the call's tokens: each ratio alone in its call
        return torch.cat([gradient_weight(name, log_ratio[k : k + 1], advantages[k : k + 1], hysteresis=hysteresis,
                                          **hyperparameters).reshape(1) for k in range(log_ratio.shape[0])])  # fmt: skip
    return gradient_weight(name, log_ratio, advantages, hysteresis=hysteresis, **hyperparameters).squeeze(-1)


def weight_curves(names: list[str], ratios: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """w(r) for A = +1 and A = −1 at default hyperparameters; sequence-level objectives are
    evaluated with every token of the completion at the same ratio (then s_i = r)."""
    log_ratio = ratios.log().unsqueeze(-1)  # (R, 1): one-token completions
    return {name: {"A>0": _curve(name, log_ratio, 1.0), "A<0": _curve(name, log_ratio, -1.0)} for name in names}


def weight_table(names: list[str]):
    """A rich Table of w at a few ratios, one row per objective and sign of A."""
    from rich.table import Table

    ratios = torch.tensor(TABLE_RATIOS, dtype=torch.float64)
    names = _ordered(names)
    curves = weight_curves(names, ratios)
    table = Table(
        title="Gradient weight w at ratio r, default hyperparameters",
        caption=f"a_hpo shown at alpha = n+/n- = {ADAPTIVE_EXAMPLE_ALPHA:.3g}; gspo and gmpo at a uniform ratio; "
        "dppo_*, clip_cov and kl_cov at pi_old = 0.5; clip_cov, kl_cov and m2po with each ratio alone in its call",
    )
    table.add_column("objective", no_wrap=True)
    table.add_column("sign A", no_wrap=True)
    for r in TABLE_RATIOS:
        table.add_column(f"r={r:g}", justify="right", no_wrap=True)
    for name in names:
        for sign in ("A>0", "A<0"):
            values = curves[name][sign].tolist()
            table.add_row(name if sign == "A>0" else "", "+" if sign == "A>0" else "-", *(f"{v:.3f}" for v in values),
                          end_section=sign == "A<0")  # fmt: skip
    return table


def plot_weights(path: pathlib.Path, names: list[str] | None = None, r_min: float = 0.05, r_max: float = 20.0) -> pathlib.Path:
    """Write a grid of w(r) panels, one per objective, to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _ordered(names or list_objectives())
    ratios = torch.logspace(math.log10(r_min), math.log10(r_max), 801, dtype=torch.float64)
    curves = weight_curves(names, ratios)
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), sharex=True, sharey=True, squeeze=False)
    x = ratios.numpy()
    for ax, name in zip(axes.flat, names):
        spec = get_objective(name)
        ax.axhline(1.0, color="0.75", lw=0.8, ls=":", zorder=0)
        ax.axvline(1.0, color="0.75", lw=0.8, ls=":", zorder=0)
        ax.plot(x, curves[name]["A>0"].numpy(), color="tab:blue", lw=1.8, label="A > 0")
        ax.plot(x, curves[name]["A<0"].numpy(), color="tab:red", lw=1.8, ls="--", label="A < 0")
        if name == "mhpo":
            normalised = _curve(name, ratios.log().unsqueeze(-1), 1.0, normalize_on_policy=True)
            ax.plot(x, normalised.numpy(), color="tab:green", lw=1.2, ls=":", label="normalize_on_policy")
            ax.legend(loc="upper left", fontsize=8)
        title = name + (" (sequence ratio)" if spec.level == "sequence" else "")
        if spec.uses_logp:
            title += " (π_old = 0.5)"
        if spec.selection:
            title += " (token alone)"
        if spec.hysteresis == "adaptive":
            title += f" (α = {ADAPTIVE_EXAMPLE_ALPHA:.2g} shown)"
        elif isinstance(spec.hysteresis, float):
            title += f" (α = {spec.hysteresis:g})"
        ax.set_title(title, fontsize=11)
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 2.5)
        ax.grid(alpha=0.25, which="both", lw=0.5)
        ax.tick_params(labelbottom=True, labelleft=True)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes.flat[: len(names)]:
        ax.set_xlabel("ratio r = π_θ / π_old", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("gradient weight w")
    axes.flat[1].legend(loc="upper left", fontsize=9)
    fig.suptitle(
        "Per-token gradient weight w (∇ℓ = −A·w·∇log π_θ) at default hyperparameters; "
        "w = 1 is REINFORCE, curves above 2.5 are cut",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a reader never sees a half-written PNG
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
