"""Policy-gradient objectives without a ratio clip: GPG, DRO and TOPR."""

from __future__ import annotations

import dataclasses
import math

import torch

from ._common import Tensor, check, clamp_log_ratio
from .reference import NoConfig
from .registry import register_objective


def _unit_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg) -> Tensor:
    return torch.ones_like(log_ratio)


@register_objective(
    "gpg",
    config=NoConfig,
    weight=_unit_weight,
    aggregation="token_mean",
    advantage_scale="valid",
    paper="https://arxiv.org/abs/2504.02546",
    summary="Group Policy Gradient: plain −A·logp, advantages rescaled by B / (B − M) informative completions.",
)
def gpg_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: NoConfig):
    r"""Group Policy Gradient (Chu et al., 2025).

    Equation (docs/objectives.md#gpg-gpg)::

        A_i = (R_i − mean_g R)·B/(B − M)      (advantage scale "valid"; M = completions of
                                               groups whose rewards are all equal)
        ℓ = −A·logp,  w = 1

    No ratio, no clip and no reference model: the update is the on-policy policy gradient,
    with the batch gradient rescaled so that uninformative groups do not dilute it.

    Args:
        log_ratio: unused, (B, T).
        logp: log π_θ, (B, T).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`NoConfig`.

    Returns:
        per-token loss (B, T) and no objective-specific metrics.

    Example:
        >>> import torch, mhpo
        >>> logp = torch.tensor([[-2.0]], dtype=torch.float64)
        >>> mhpo.policy_loss("gpg", logp, logp, torch.tensor([0.5], dtype=torch.float64),
        ...                  torch.ones_like(logp)).per_token
        tensor([[1.]], dtype=torch.float64)

    Deviations and assumptions:
        1. M follows the paper (completions of zero-variance groups); verl's ``gpg`` estimator
           counts completions whose reward is exactly 0 instead, which differs whenever a
           group is all-correct or a reward is 0 in a mixed group.
    """
    return -advantages * logp, {}


@dataclasses.dataclass(frozen=True)
class DROConfig:
    """Hyperparameter of DRO, verl's formulation.

    Attributes:
        dro_beta: the coefficient β > 0 of the quadratic penalty (β/2)·δ² (default 0.1, this
            library's choice; verl has no default and requires ``policy_loss.dro_beta``).
    """

    dro_beta: float = 0.1

    def __post_init__(self) -> None:
        check(isinstance(self.dro_beta, (int, float)) and not isinstance(self.dro_beta, bool)
              and 0 < self.dro_beta < math.inf, f"DROConfig: dro_beta must be a finite number > 0; got {self.dro_beta!r}.")  # fmt: skip


def dro_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: DROConfig) -> Tensor:
    """w = 1 − β·δ/A where A ≠ 0 (δ clamped; 1 where |δ| > 20 stops the penalty's gradient).
    Where A = 0 the gradient β·δ has no weight form and w is 1."""
    clamped, inside = clamp_log_ratio(log_ratio)
    safe = torch.where(advantages != 0, advantages, torch.ones_like(advantages))
    return torch.where(advantages != 0, 1 - cfg.dro_beta * clamped * inside / safe, torch.ones_like(clamped))


@register_objective(
    "dro",
    config=DROConfig,
    weight=dro_weight,
    aggregation="token_mean",
    homogeneous=False,
    paper="https://arxiv.org/abs/2405.19107",
    summary="Direct Reward Optimisation (verl's form): −A·logp plus a quadratic penalty (β/2)·δ².",
)
def dro_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: DROConfig):
    r"""DRO, as verl formulates it: a policy gradient held near π_old by a quadratic penalty.

    Equation (docs/objectives.md#dro-dro)::

        ℓ = −A·logp + (β/2)·δ²,   ∂ℓ/∂logp = −A + β·δ,   w = 1 − β·δ/A

    The penalty does not scale with A, so the loss is not homogeneous in A: α cannot be
    folded into the advantages (verl's ``mhpo_dro`` estimator refuses to).

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T); the penalty's gradient flows through it.
        logp: log π_θ, (B, T).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`DROConfig`.

    Returns:
        per-token loss (B, T) and metric ``dro/penalty_mean`` (mean (β/2)·δ²).

    Example:
        >>> import torch, mhpo
        >>> logp = torch.tensor([[-1.0]], dtype=torch.float64)
        >>> mhpo.policy_loss("dro", logp, logp - 0.5, torch.tensor([1.0], dtype=torch.float64),
        ...                  torch.ones_like(logp), dro_beta=0.2).per_token   # 1 + 0.1·0.25
        tensor([[1.0250]], dtype=torch.float64)

    Deviations and assumptions:
        1. DRO's paper (Richemond et al., 2024) is an offline method with a learned value;
           this is the online per-token form verl ships under that name.
    """
    penalty = 0.5 * cfg.dro_beta * log_ratio.square()
    with torch.no_grad():
        metrics = {"dro/penalty_mean": (penalty * mask).sum() / mask.sum().clamp(min=1)}
    return -advantages * logp + penalty, metrics


def topr_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: NoConfig) -> Tensor:
    """w = 1 where A > 0; min(π(y)/π_old(y), 1) = exp(min(Σ m δ, 0)) where A <= 0."""
    clamped, _ = clamp_log_ratio(log_ratio)
    seq = (clamped * mask).sum(-1, keepdim=True).clamp(max=0).expand_as(clamped)
    return torch.where(advantages > 0, torch.ones_like(clamped), torch.exp(seq))


@register_objective(
    "topr",
    config=NoConfig,
    weight=topr_weight,
    aggregation="seq_mean_token_sum",
    advantage_scale="none",
    level="sequence",
    paper="https://arxiv.org/abs/2503.14286",
    summary="Tapered off-policy REINFORCE: SFT on A > 0, sequence ratio truncated at 1 on A < 0.",
)
def topr_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: NoConfig):
    r"""Tapered Off-Policy REINFORCE (Le Roux et al., 2025).

    Equation (docs/objectives.md#topr-topr)::

        ρ_i = π_θ(y_i)/π_old(y_i) = exp(Σ_t m δ_{i,t})
        ℓ = −A·logp                  where A > 0  (supervised on what worked)
        ℓ = −sg[min(ρ_i, 1)]·A·logp  where A ≤ 0  (truncated importance weight)

    Positive completions keep their full gradient however far π_θ has moved; negative ones
    fade once π_θ has already made them less likely, which is what stops the collapse of
    off-policy REINFORCE on negative samples.

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: log π_θ, (B, T); the gradient flows through it.
        advantages: one advantage per completion, broadcast to (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`NoConfig`.

    Returns:
        per-token loss (B, T) and metric ``topr/neg_weight_mean`` (mean min(ρ, 1) over the
        tokens of completions with A < 0).

    Example:
        >>> import torch, mhpo
        >>> logp = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
        >>> old = torch.tensor([[-0.5, -1.0]], dtype=torch.float64)   # ρ = e^−0.5
        >>> mhpo.policy_loss("topr", logp, old, torch.tensor([-1.0], dtype=torch.float64),
        ...                  torch.ones_like(logp), aggregation="token_sum").per_token
        tensor([[-0.6065, -0.6065]], dtype=torch.float64)

    Deviations and assumptions:
        1. The paper splits on the sign of the reward; with a group baseline the sign of the
           advantage takes its place (advantages are mean-centred, not scaled: ``none``).
        2. The paper normalises by the batch size; the default aggregation
           ``seq_mean_token_sum`` does that.
    """
    with torch.no_grad():
        weight = topr_weight(log_ratio, advantages, mask, cfg)
        negative = (advantages < 0) & (mask > 0)
        metrics = {"topr/neg_weight_mean": (weight * negative).sum() / negative.sum().clamp(min=1)}
    return -weight * advantages * logp, metrics
