"""DPPO: a trust region on the sampled token's probability shift instead of its ratio."""

from __future__ import annotations

import dataclasses
import math

import torch

from ._common import Tensor, check, clamp_log_ratio, masked_fraction
from .registry import register_objective

DPPO_PAPER = "https://arxiv.org/abs/2602.04879"


@dataclasses.dataclass(frozen=True)
class DPPOConfig:
    """Hyperparameters of DPPO-Binary-TV (``dppo_tv``).

    Attributes:
        delta_low: a token with A < 0 stops receiving gradient once π_θ − π_old < −delta_low.
        delta_high: a token with A > 0 stops receiving gradient once π_θ − π_old > delta_high.
            Both 0.15, as in the paper's public training script.
        tis_cap: truncate the (detached) ratio that weights the gradient at this value; None
            (default, as in the paper) = no truncation. verl's ``dppo_tv`` and ``dppo_kl``
            truncate at its ``clip_ratio_c`` (20 when unset): ``tis_cap=20`` is verl's variant.
    """

    delta_low: float = 0.15
    delta_high: float = 0.15
    tis_cap: float | None = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        for label in ("delta_low", "delta_high"):
            value = getattr(self, label)
            check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf,
                  f"{name}: {label} must be a finite number >= 0 (a divergence threshold); got {value!r}.")  # fmt: skip
        check(self.tis_cap is None or (isinstance(self.tis_cap, (int, float)) and self.tis_cap > 0),
              f"{name}: tis_cap must be None (no truncation) or a number > 0; got {self.tis_cap!r}.")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DPPOKLConfig(DPPOConfig):
    """Hyperparameters of DPPO-Binary-KL (``dppo_kl``): the thresholds bound the binary KL
    divergence instead of the probability difference. 0.05 on both sides is this library's
    default (the paper's public script sets only the TV thresholds); verl uses its
    ``clip_ratio_low`` and ``clip_ratio_high`` for both variants."""

    delta_low: float = 0.05
    delta_high: float = 0.05


def _probabilities(log_ratio: Tensor, logp: Tensor) -> tuple[Tensor, Tensor]:
    """(π_θ, π_old) of the sampled tokens; π_old from logp − δ (δ already clamped to ±20)."""
    logp = logp.detach()
    return torch.exp(logp), torch.exp(logp - log_ratio)


def tv_inside(log_ratio: Tensor, logp: Tensor, advantages: Tensor, cfg: DPPOConfig) -> Tensor:
    """The Binary-TV trust region: inside unless A pushes π further past its threshold."""
    p, q = _probabilities(log_ratio, logp)
    return torch.where(advantages > 0, p - q <= cfg.delta_high, p - q >= -cfg.delta_low)


def binary_kl(log_ratio: Tensor, logp: Tensor) -> Tensor:
    """KL(Bern(π_old) ‖ Bern(π_θ)) of the sampled token against all others:
    q·log(q/p) + (1 − q)·log((1 − q)/(1 − p)), with 1e-8 in the second ratio as verl has."""
    p, q = _probabilities(log_ratio, logp)
    return q * (-log_ratio.detach()) + (1 - q) * torch.log((1 - q + 1e-8) / (1 - p + 1e-8))


def kl_inside(log_ratio: Tensor, logp: Tensor, advantages: Tensor, cfg: DPPOConfig) -> Tensor:
    """The Binary-KL trust region: a token leaves it only when A would push it further."""
    p, q = _probabilities(log_ratio, logp)
    kl = binary_kl(log_ratio, logp)
    return torch.where(advantages > 0, (kl <= cfg.delta_high) | (p <= q), (kl <= cfg.delta_low) | (p >= q))


def _ratio_weight(log_ratio: Tensor, cfg: DPPOConfig) -> Tensor:
    ratio = torch.exp(log_ratio.detach())
    return ratio if cfg.tis_cap is None else ratio.clamp(max=cfg.tis_cap)


def _dppo(inside_fn, log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: DPPOConfig):
    with torch.no_grad():
        inside = inside_fn(log_ratio, logp, advantages, cfg).to(logp.dtype)
        weight = _ratio_weight(log_ratio, cfg) * inside
        outside = (inside == 0) & (mask > 0)
        metrics = {
            "clip/high_frac": masked_fraction(outside & (advantages > 0), mask),
            "clip/low_frac": masked_fraction(outside & (advantages < 0), mask),
        }
    return -weight * advantages * logp, metrics


def _weight(inside_fn):
    def weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: DPPOConfig, *, logp: Tensor) -> Tensor:
        clamped, _ = clamp_log_ratio(log_ratio)
        return _ratio_weight(clamped, cfg) * inside_fn(clamped, logp, advantages, cfg).to(clamped.dtype)

    weight.__doc__ = "w = sg[r] (truncated at tis_cap) inside the trust region, 0 outside."
    return weight


dppo_tv_weight = _weight(tv_inside)
dppo_kl_weight = _weight(kl_inside)


@register_objective(
    "dppo_tv",
    config=DPPOConfig,
    weight=dppo_tv_weight,
    aggregation="token_mean",
    uses_logp=True,
    paper=DPPO_PAPER,
    summary="Divergence PPO, Binary-TV: masks a token once |π − π_old| passes δ in A's direction.",
)
def dppo_tv_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: DPPOConfig):
    r"""DPPO with the Binary total-variation trust region (Qi et al., 2026).

    Equation (docs/objectives.md#dppo-dppo_tv-dppo_kl)::

        p = π_θ = exp(logp),  q = π_old = exp(logp − δ)
        M = 1[p − q ≤ delta_high] where A > 0,  1[p − q ≥ −delta_low] where A ≤ 0
        ℓ = −M·sg[r̃]·A·logp,  r̃ = r (or min(r, tis_cap)),  w = M·r̃

    The gradient is that of the unclipped surrogate r·A inside the trust region and zero
    outside it; the trust region bounds the change of the probability itself, so a rare
    token may move by a large ratio and a likely one only by a small one.

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: log π_θ of the sampled tokens, (B, T); the gradient flows through it.
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`DPPOConfig`.

    Returns:
        per-token loss (B, T) and metrics ``clip/high_frac`` (A > 0 tokens outside the trust
        region) and ``clip/low_frac`` (A < 0 tokens outside it).

    Example:
        >>> import math, torch, mhpo
        >>> logp = torch.tensor([[math.log(0.6), math.log(0.9)]], dtype=torch.float64)
        >>> old = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=torch.float64)
        >>> out = mhpo.policy_loss("dppo_tv", logp, old, torch.tensor([1.0], dtype=torch.float64),
        ...                        torch.ones_like(logp), aggregation="token_sum")
        >>> out.per_token   # p − q = 0.1 inside: −1.2·ln 0.6 = 0.613; p − q = 0.4 outside: 0
        tensor([[0.6130, 0.0000]], dtype=torch.float64)

    Deviations and assumptions:
        1. π_old is recovered as exp(logp − δ) from the clamped δ; where |δ| > 20 the trust
           region is decided on the clamped ratio (both probabilities then differ by e^20).
        2. Like CISPO's, the loss value depends on logp itself; only its gradient is meaningful.
    """
    return _dppo(tv_inside, log_ratio, logp, advantages, mask, cfg)


@register_objective(
    "dppo_kl",
    config=DPPOKLConfig,
    weight=dppo_kl_weight,
    aggregation="token_mean",
    uses_logp=True,
    paper=DPPO_PAPER,
    summary="Divergence PPO, Binary-KL: masks a token once the binary KL passes δ in A's direction.",
)
def dppo_kl_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: DPPOKLConfig):
    r"""DPPO with the Binary KL trust region (Qi et al., 2026).

    Equation (docs/objectives.md#dppo-dppo_tv-dppo_kl)::

        D = q·log(q/p) + (1 − q)·log((1 − q + 1e-8)/(1 − p + 1e-8))
        M = 1[D ≤ delta_high or p ≤ q] where A > 0,  1[D ≤ delta_low or p ≥ q] where A ≤ 0
        ℓ = −M·sg[r̃]·A·logp

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: log π_θ of the sampled tokens, (B, T).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`DPPOKLConfig`.

    Returns:
        per-token loss (B, T) and the metrics of ``dppo_tv``.

    Example:
        >>> import math, torch, mhpo
        >>> logp = torch.tensor([[math.log(0.55), math.log(0.9)]], dtype=torch.float64)
        >>> old = torch.full_like(logp, math.log(0.5))
        >>> out = mhpo.policy_loss("dppo_kl", logp, old, torch.tensor([1.0], dtype=torch.float64),
        ...                        torch.ones_like(logp), aggregation="token_sum")
        >>> out.per_token   # D = 0.005 inside: −1.1·ln 0.55 = 0.658; D = 0.51 outside: 0
        tensor([[0.6576, 0.0000]], dtype=torch.float64)

    Deviations and assumptions:
        1. The 1e-8 inside the second logarithm is verl's, kept so that p → 1 stays finite.
    """
    return _dppo(kl_inside, log_ratio, logp, advantages, mask, cfg)
