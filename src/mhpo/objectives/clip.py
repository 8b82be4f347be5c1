"""The clipped-ratio family: GRPO (PPO clip), Dr. GRPO, DAPO, HPO and A-HPO.

All five share one per-token loss and differ only in defaults (clip range, aggregation,
advantage scale, hysteretic weighting), so they share one function and one config class.
"""

from __future__ import annotations

import dataclasses

import torch

from ._common import Tensor, check, check_eps, clamp_log_ratio, masked_fraction
from .registry import RolloutRules, register_objective


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Hyperparameters of the clipped surrogate.

    Attributes:
        eps_low: lower clip offset; the ratio is clipped below at 1 − eps_low. In [0, 1).
        eps_high: upper clip offset; the ratio is clipped above at 1 + eps_high. >= 0.
        dual_clip: dual-clip constant c > 1 (Ye et al., 2020). For A < 0 the loss is capped
            at −c·A, so a token whose ratio exploded cannot dominate the update. None = off.
    """

    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = None

    def __post_init__(self) -> None:
        check_eps(type(self).__name__, self.eps_low, self.eps_high)
        check(
            self.dual_clip is None or (isinstance(self.dual_clip, (int, float)) and self.dual_clip > 1),
            f"{type(self).__name__}: dual_clip must be None (off) or a number > 1 (e.g. 3.0); got {self.dual_clip!r}.",
        )


@dataclasses.dataclass(frozen=True)
class DAPOConfig(ClipConfig):
    """DAPO's clip-higher defaults: ε_low = 0.2, ε_high = 0.28."""

    eps_high: float = 0.28


def clipped_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: ClipConfig) -> Tensor:
    """w = r where the unclipped branch is active, 0 where the clipped (or dual-clip) one is."""
    log_ratio, inside = clamp_log_ratio(log_ratio)
    ratio = torch.exp(log_ratio)
    # A > 0: min(r, clip(r)) picks r unless r > 1 + eps_high.
    # A < 0: max(r, clip(r)) picks r unless r < 1 − eps_low (and, with dual clip, r <= c).
    active = torch.where(advantages >= 0, ratio <= 1 + cfg.eps_high, ratio >= 1 - cfg.eps_low)
    if cfg.dual_clip is not None:
        active = active & ~((advantages < 0) & (ratio > cfg.dual_clip))
    return torch.where(active & inside, ratio, torch.zeros_like(ratio))


def clipped_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: ClipConfig):
    r"""PPO-clip surrogate, per token.

    Equation (docs/objectives.md#clipped-family-grpo-dr_grpo-dapo-hpo-a_hpo)::

        r = exp(log_ratio)
        ℓ = −min(r·A, clip(r, 1 − eps_low, 1 + eps_high)·A)
        with dual_clip = c and A < 0:  ℓ ← min(ℓ, −c·A)

    Args:
        log_ratio: δ = logp − old_logp, clamped to [−20, 20], (B, T).
        logp: unused (the ratio carries the gradient), (B, T).
        advantages: A broadcast to (B, T).
        mask: 1 for counted tokens, 0 for padding, (B, T) float.
        cfg: :class:`ClipConfig`.

    Returns:
        per-token loss (B, T) and metrics ``clip/low_frac`` (r < 1 − eps_low with A < 0),
        ``clip/high_frac`` (r > 1 + eps_high with A > 0) and, with dual clip,
        ``clip/dual_frac`` (A < 0 and r > c).

    Sources: PPO (https://arxiv.org/abs/1707.06347), GRPO (https://arxiv.org/abs/2402.03300),
    Dr. GRPO (https://arxiv.org/abs/2503.20783), DAPO (https://arxiv.org/abs/2503.14476),
    HPO (see docs/objectives.md).

    Example:
        >>> import torch, mhpo
        >>> logp = torch.log(torch.tensor([[0.5, 1.5]], dtype=torch.float64))
        >>> out = mhpo.policy_loss("grpo", logp, torch.zeros_like(logp),
        ...                        torch.tensor([1.0], dtype=torch.float64), torch.ones_like(logp))
        >>> out.per_token   # −min(0.5, 0.8), −min(1.5, 1.2)
        tensor([[-0.5000, -1.2000]], dtype=torch.float64)

    Deviations and assumptions:
        1. Clip fractions count a token only when clipping removes its gradient (the side
           matching the sign of A), as verl does; a token with r < 1 − eps_low and A > 0 is
           not "clipped" because the min keeps its unclipped branch.
        2. With dual clip, tokens with A < 0 and r > c get weight 0 (the cap is constant).
    """
    ratio = torch.exp(log_ratio)
    clipped = ratio.clamp(1 - cfg.eps_low, 1 + cfg.eps_high)
    loss = torch.maximum(-ratio * advantages, -clipped * advantages)
    with torch.no_grad():
        negative = advantages < 0
        metrics = {
            "clip/low_frac": masked_fraction((ratio < 1 - cfg.eps_low) & negative, mask),
            "clip/high_frac": masked_fraction((ratio > 1 + cfg.eps_high) & (advantages > 0), mask),
        }
    if cfg.dual_clip is not None:
        cap = -cfg.dual_clip * advantages
        loss = torch.where(advantages < 0, torch.minimum(loss, cap), loss)
        metrics["clip/dual_frac"] = masked_fraction(negative & (ratio > cfg.dual_clip), mask)
    return loss, metrics


register_objective(
    "grpo",
    config=ClipConfig,
    weight=clipped_weight,
    aggregation="seq_mean_token_mean",
    advantage_scale="group",
    paper="https://arxiv.org/abs/2402.03300",
    summary="PPO-clip on group-relative advantages, per-response length normalisation.",
)(clipped_loss)
register_objective(
    "dr_grpo",
    config=ClipConfig,
    weight=clipped_weight,
    aggregation="seq_mean_token_sum_norm",
    advantage_scale="none",
    paper="https://arxiv.org/abs/2503.20783",
    summary="GRPO without std scaling of advantages and with a constant length normaliser.",
)(clipped_loss)
register_objective(
    "dapo",
    config=DAPOConfig,
    weight=clipped_weight,
    aggregation="token_mean",
    advantage_scale="group",
    # DAPO's rollout rules. The paper's soft punishment buffer is 4096 of 20480 tokens; a
    # quarter of the budget keeps the 4 of 16 tokens the studies here were run with.
    rollout=RolloutRules(dynamic_sampling=True, overlong_filter=True, overlong_buffer_fraction=0.25),
    paper="https://arxiv.org/abs/2503.14476",
    summary="Clip-higher (0.2/0.28) with token-level mean, dynamic sampling and overlong filtering and punishment.",
)(clipped_loss)
register_objective(
    "hpo",
    config=ClipConfig,
    weight=clipped_weight,
    aggregation="mean_length",
    advantage_scale="group",
    hysteresis=0.6,
    paper="https://arxiv.org/search/?query=Hysteretic+Policy+Optimization&searchtype=title",
    summary="GRPO clip with negative-advantage updates weighted by a fixed alpha and mean-length normalisation.",
)(clipped_loss)
register_objective(
    "a_hpo",
    config=ClipConfig,
    weight=clipped_weight,
    aggregation="mean_length",
    advantage_scale="group",
    hysteresis="adaptive",
    alpha_min=0.1,
    paper="https://arxiv.org/search/?query=Hysteretic+Policy+Optimization&searchtype=title",
    summary="HPO with alpha = clip(n+/n-, alpha_min, 1) from the rollout batch's advantage signs.",
)(clipped_loss)
