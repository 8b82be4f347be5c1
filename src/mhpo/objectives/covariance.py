"""Clip-Cov and KL-Cov: the clipped surrogate with a few high-covariance tokens held back.

Cui et al. (2025) show that the entropy of the policy falls with the covariance between a
token's log-probability and its advantage; these objectives treat the tokens with the
largest covariance specially, a tiny fraction (2e-4) of each batch: Clip-Cov takes a
random sample of them out of the gradient, KL-Cov puts a penalty on their log-ratio.

The selection is over the tokens of one loss call (as in the authors' code and in verl and
SkyRL), so it depends on how a batch is split into micro-batches, and it is not positively
homogeneous in A: α cannot be folded into the advantages for these objectives.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ._common import Tensor, check, check_eps, clamp_log_ratio, masked_fraction, masked_mean
from .clip import clipped_loss, clipped_weight
from .registry import register_objective

COV_PAPER = "https://arxiv.org/abs/2505.22617"
SELECTION = "the tokens of largest covariance between logp and A among those of one loss call"


def covariance(logp: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Per-token centred product (A − mean A)·(logp − mean logp), means over counted tokens."""
    logp = logp.detach()
    return (advantages - masked_mean(advantages, mask)) * (logp - masked_mean(logp, mask))


@dataclasses.dataclass(frozen=True)
class ClipCovConfig:
    """Hyperparameters of Clip-Cov.

    Attributes:
        eps_low, eps_high: the PPO clip range the authors' code keeps (0.2, 0.2).
        clip_cov_ratio: the share of counted tokens taken out of the gradient (2e-4; at least
            one token when any is a candidate).
        clip_cov_lb, clip_cov_ub: only tokens whose covariance lies strictly between these
            bounds (1, 5) and that the PPO clip has not already cut are candidates.
        seed: seed of the random choice among the candidates (reproducible: the same inputs
            give the same tokens on every call and every device).
    """

    eps_low: float = 0.2
    eps_high: float = 0.2
    clip_cov_ratio: float = 2e-4
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    seed: int = 0

    dual_clip = None  # the clip family's option, not offered here

    def __post_init__(self) -> None:
        check_eps("ClipCovConfig", self.eps_low, self.eps_high)
        check(isinstance(self.clip_cov_ratio, (int, float)) and 0 < self.clip_cov_ratio <= 1,
              f"ClipCovConfig: clip_cov_ratio must be in (0, 1]; got {self.clip_cov_ratio!r}.")  # fmt: skip
        check(isinstance(self.clip_cov_lb, (int, float)) and isinstance(self.clip_cov_ub, (int, float))
              and self.clip_cov_lb <= self.clip_cov_ub,
              f"ClipCovConfig: need clip_cov_lb <= clip_cov_ub; got {self.clip_cov_lb!r} and {self.clip_cov_ub!r}.")  # fmt: skip
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool), f"ClipCovConfig: seed must be an int; got {self.seed!r}.")


def _count(ratio: float, mask: Tensor) -> int:
    return max(int(ratio * float(mask.sum())), 1)


def clip_cov_selected(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: ClipCovConfig) -> Tensor:
    """Bool (B, T): the tokens Clip-Cov takes out of the gradient."""
    cov = covariance(logp, advantages, mask)
    unclipped = clipped_weight(log_ratio, advantages, mask, cfg) > 0
    cut_by_clip = ~unclipped & (advantages != 0)
    candidates = (mask > 0) & ~cut_by_clip & (cov > cfg.clip_cov_lb) & (cov < cfg.clip_cov_ub)
    where = torch.nonzero(candidates.flatten()).squeeze(-1)
    chosen = torch.zeros(candidates.numel(), dtype=torch.bool, device=candidates.device)
    if where.numel():
        order = torch.randperm(where.numel(), generator=torch.Generator().manual_seed(cfg.seed))
        chosen[where[order[: _count(cfg.clip_cov_ratio, mask)].to(where.device)]] = True
    return chosen.view_as(candidates)


def clip_cov_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: ClipCovConfig, *, logp: Tensor) -> Tensor:
    """w = the clipped surrogate's weight, 0 at the selected tokens."""
    clamped, _ = clamp_log_ratio(log_ratio)
    kept = ~clip_cov_selected(clamped, logp, advantages, mask, cfg)
    return clipped_weight(log_ratio, advantages, mask, cfg) * kept


@register_objective(
    "clip_cov",
    config=ClipCovConfig,
    weight=clip_cov_weight,
    aggregation="token_mean",
    homogeneous=False,
    selection=SELECTION,
    uses_logp=True,
    paper=COV_PAPER,
    summary="Clipped surrogate with a random few high-covariance tokens detached (entropy control).",
)
def clip_cov_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: ClipCovConfig):
    r"""Clip-Cov (Cui et al., 2025).

    Equation (docs/objectives.md#clip-cov-and-kl-cov-clip_cov-kl_cov)::

        Cov_t = (A_t − mean A)·(sg[logp_t] − mean sg[logp])       (means over counted tokens)
        C = tokens not cut by the PPO clip with clip_cov_lb < Cov_t < clip_cov_ub
        S = max(⌊clip_cov_ratio·N⌋, 1) tokens of C drawn at random (seeded)
        ℓ = −min(r·A, clip(r, 1 − eps_low, 1 + eps_high)·A)·1[t ∉ S]

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: log π_θ of the sampled tokens, (B, T) (its value enters the covariance).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`ClipCovConfig`.

    Returns:
        per-token loss (B, T) and metrics ``clip/low_frac``, ``clip/high_frac`` (the PPO
        clip's) and ``cov/selected_frac`` (the share of counted tokens selected).

    Example:
        >>> import torch, mhpo
        >>> logp = torch.tensor([[-0.1, -3.0, -0.2, -2.5]], dtype=torch.float64)
        >>> adv = torch.tensor([[2.0, -1.0, 2.0, -1.0]], dtype=torch.float64)
        >>> out = mhpo.policy_loss("clip_cov", logp, logp, adv, torch.ones_like(logp), clip_cov_ratio=0.25)
        >>> out.metrics["cov/selected_frac"], out.per_token   # one of the four (Cov 1.99) loses its gradient
        (tensor(0.2500, dtype=torch.float64), tensor([[ 0., 1., -2., 1.]], dtype=torch.float64))

    Deviations and assumptions:
        1. The PPO clip stays, as in the authors' code (adapted by verl); the paper's equation
           writes the bare surrogate. Large ``eps_low``/``eps_high`` give the equation.
        2. verl draws with the global torch generator; here a generator seeded by ``seed``
           (on the CPU) makes the draw reproducible, so the draws differ from verl's.
    """
    loss, metrics = clipped_loss(log_ratio, logp, advantages, mask, cfg)
    with torch.no_grad():
        selected = clip_cov_selected(log_ratio, logp, advantages, mask, cfg)
        metrics["cov/selected_frac"] = masked_fraction(selected, mask)
    return torch.where(selected, torch.zeros_like(loss), loss), metrics


@dataclasses.dataclass(frozen=True)
class KLCovConfig:
    """Hyperparameters of KL-Cov.

    Attributes:
        kl_cov_ratio: the share of counted tokens with the largest covariance that get the
            penalty (2e-4; at least one).
        ppo_kl_coef: the coefficient k of the penalty k·|δ| on those tokens (1.0).
    """

    kl_cov_ratio: float = 2e-4
    ppo_kl_coef: float = 1.0

    def __post_init__(self) -> None:
        check(isinstance(self.kl_cov_ratio, (int, float)) and 0 < self.kl_cov_ratio <= 1,
              f"KLCovConfig: kl_cov_ratio must be in (0, 1]; got {self.kl_cov_ratio!r}.")  # fmt: skip
        check(isinstance(self.ppo_kl_coef, (int, float)) and 0 <= self.ppo_kl_coef < math.inf,
              f"KLCovConfig: ppo_kl_coef must be a finite number >= 0; got {self.ppo_kl_coef!r}.")  # fmt: skip


def kl_cov_selected(logp: Tensor, advantages: Tensor, mask: Tensor, cfg: KLCovConfig) -> Tensor:
    """Bool (B, T): the k = max(⌊kl_cov_ratio·N⌋, 1) counted tokens of largest covariance."""
    cov = torch.where(mask > 0, covariance(logp, advantages, mask), torch.full_like(mask, -math.inf))
    chosen = torch.zeros(cov.numel(), dtype=torch.bool, device=cov.device)
    if mask.sum() > 0:
        k = min(_count(cfg.kl_cov_ratio, mask), int(mask.sum()))
        chosen[torch.topk(cov.flatten(), k).indices] = True
    return chosen.view_as(cov)


def kl_cov_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: KLCovConfig, *, logp: Tensor) -> Tensor:
    """w = r, and r − k·sign(δ)/A at the selected tokens (A ≠ 0); where A = 0 a selected token's
    gradient k·sign(δ) has no weight form and w is left at r."""
    clamped, inside = clamp_log_ratio(log_ratio)
    ratio = torch.exp(clamped) * inside
    selected = kl_cov_selected(logp, advantages, mask, cfg) & (advantages != 0)
    safe = torch.where(advantages != 0, advantages, torch.ones_like(advantages))
    return torch.where(selected, ratio - cfg.ppo_kl_coef * torch.sign(log_ratio) * inside / safe, ratio)


@register_objective(
    "kl_cov",
    config=KLCovConfig,
    weight=kl_cov_weight,
    aggregation="token_mean",
    homogeneous=False,
    selection=SELECTION,
    uses_logp=True,
    paper=COV_PAPER,
    summary="Unclipped surrogate with a |δ| penalty on the few tokens of largest covariance.",
)
def kl_cov_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: KLCovConfig):
    r"""KL-Cov (Cui et al., 2025).

    Equation (docs/objectives.md#clip-cov-and-kl-cov-clip_cov-kl_cov)::

        S = the max(⌊kl_cov_ratio·N⌋, 1) counted tokens of largest Cov_t
        ℓ = −r·A + ppo_kl_coef·|δ|·1[t ∈ S]

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: log π_θ of the sampled tokens, (B, T) (its value enters the covariance).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`KLCovConfig`.

    Returns:
        per-token loss (B, T) and metric ``cov/selected_frac``.

    Example:
        >>> import torch, mhpo
        >>> logp = torch.tensor([[-0.1, -3.0]], dtype=torch.float64, requires_grad=True)
        >>> old = torch.tensor([[-0.3, -3.0]], dtype=torch.float64)
        >>> out = mhpo.policy_loss("kl_cov", logp, old, torch.tensor([[1.0, -1.0]], dtype=torch.float64),
        ...                        torch.ones_like(old), aggregation="token_sum")
        >>> out.per_token   # the first token (Cov 1.45) gets + |0.2|: −e^0.2 + 0.2
        tensor([[-1.0214,  1.0000]], dtype=torch.float64, grad_fn=<WhereBackward0>)

    Deviations and assumptions:
        1. Ties in the covariance are broken by ``torch.topk``, as in verl.
    """
    ratio = torch.exp(log_ratio)
    with torch.no_grad():
        selected = kl_cov_selected(logp, advantages, mask, cfg)
        metrics = {"cov/selected_frac": masked_fraction(selected, mask)}
    return -ratio * advantages + cfg.ppo_kl_coef * log_ratio.abs() * selected, metrics
