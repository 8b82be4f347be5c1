"""MHPO: the Log-Fidelity Modulator and the Decoupled Hazard Penalty."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ._common import Tensor, check, clamp_log_ratio, masked_mean
from .registry import register_objective


@dataclasses.dataclass(frozen=True)
class MHPOConfig:
    """Hyperparameters of MHPO.

    Attributes:
        c: LFM bound; ψ = c·tanh(δ/c) lies in (−c, c), and the gradient weight is below e^c. > 0.
        k_pos: Weibull shape of the hazard on upward shifts (ψ > 0). > 0.
        lam_pos: Weibull scale of the hazard on upward shifts. > 0.
        k_neg: Weibull shape of the hazard on downward shifts (ψ < 0). > 0.
        lam_neg: Weibull scale of the hazard on downward shifts. > 0.
        use_lfm: ablation flag; False replaces ψ by δ (weight r·exp(−ζ), unbounded in r).
        use_dhp: ablation flag; False sets ζ = 0 (no hazard penalty).
        normalize_on_policy: divide ℓ by exp(−ζ(r = 1)) so that the on-policy weight is 1
            (with the defaults it is otherwise exp(−1.328) ≈ 0.265).
    """

    c: float = 1.5
    k_pos: float = 1.5
    lam_pos: float = 1.0
    k_neg: float = 2.0
    lam_neg: float = 0.8
    use_lfm: bool = True
    use_dhp: bool = True
    normalize_on_policy: bool = False

    def __post_init__(self) -> None:
        for name in ("c", "k_pos", "lam_pos", "k_neg", "lam_neg"):
            value = getattr(self, name)
            check(
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf,
                f"MHPOConfig: {name} must be a finite number > 0; got {value!r}.",
            )
        for name in ("use_lfm", "use_dhp", "normalize_on_policy"):
            check(isinstance(getattr(self, name), bool), f"MHPOConfig: {name} must be True or False.")

    @property
    def on_policy_survival(self) -> float:
        """exp(−ζ) at r = 1, where ψ = 0 and softplus(0) = ln 2 (1 when use_dhp=False)."""
        if not self.use_dhp:
            return 1.0
        zeta = (math.log(2) / self.lam_pos) ** self.k_pos + (math.log(2) / self.lam_neg) ** self.k_neg
        return math.exp(-zeta)


def _modulate(log_ratio: Tensor, cfg: MHPOConfig) -> Tensor:
    """Log-Fidelity Modulator ψ = c·tanh(δ/c), or δ itself when use_lfm=False."""
    return cfg.c * torch.tanh(log_ratio / cfg.c) if cfg.use_lfm else log_ratio


def _power_(x: Tensor, k: float) -> Tensor:
    """x^k in place for x >= 0; the default shapes (1.5, 2) take cheaper forms."""
    if k == 2:
        return x.square_()
    if k == 1.5:
        return x.mul_(x.sqrt())
    return x.pow_(k)


@torch.no_grad()
def _hazard(psi: Tensor, cfg: MHPOConfig) -> Tensor:
    """Decoupled Hazard Penalty ζ = (softplus(ψ)/λ₊)^k₊ + (softplus(−ψ)/λ₋)^k₋ (0 if off).

    ζ never carries gradient, so it is built in place in two buffers.
    """
    if not cfg.use_dhp:
        return torch.zeros_like(psi)
    up = F.softplus(psi)
    down = torch.sub(up, psi)  # softplus(−ψ) = softplus(ψ) − ψ: one transcendental, not two
    up = _power_(up.div_(cfg.lam_pos), cfg.k_pos)
    return up.add_(_power_(down.div_(cfg.lam_neg), cfg.k_neg))


def mhpo_weight(log_ratio: Tensor, advantages: Tensor, mask: Tensor, cfg: MHPOConfig) -> Tensor:
    """w = exp(ψ − ζ)·sech²(δ/c) (with LFM) or r·exp(−ζ) (without), over exp(−ζ(1)) if normalised."""
    clamped, inside = clamp_log_ratio(log_ratio)
    psi = _modulate(clamped, cfg)
    slope = 1 - torch.tanh(clamped / cfg.c).square() if cfg.use_lfm else 1.0  # dψ/dδ = sech²(δ/c)
    weight = torch.exp(psi - _hazard(psi, cfg)) * slope * inside
    return weight / cfg.on_policy_survival if cfg.normalize_on_policy else weight


@register_objective(
    "mhpo",
    config=MHPOConfig,
    weight=mhpo_weight,
    aggregation="seq_mean_token_mean",
    advantage_scale="group",
    paper="https://arxiv.org/search/?query=Modulated+Hazard-aware+Policy+Optimization&searchtype=title",
    summary="Modulated Hazard-aware Policy Optimization: tanh log-ratio modulator and Weibull hazard damping.",
)
def mhpo_loss(log_ratio: Tensor, logp: Tensor, advantages: Tensor, mask: Tensor, cfg: MHPOConfig):
    r"""Modulated Hazard-aware Policy Optimization.

    Equation (docs/objectives.md#mhpo-mhpo)::

        ψ = c·tanh(δ/c)                                         (Log-Fidelity Modulator)
        ζ = (softplus(sg[ψ])/lam_pos)^k_pos + (softplus(−sg[ψ])/lam_neg)^k_neg   (Decoupled Hazard Penalty)
        ℓ = −exp(ψ − sg[ζ])·A

    There is no clip and no min: the gradient weight w = exp(ψ − ζ)·sech²(δ/c) is smooth,
    decays instead of being cut to 0, and stays below e^c for every ratio. The hazard damps upward and downward
    shifts with separate Weibull shapes and scales; exp(−ζ) is the Weibull survival
    probability of the token's shift.

    Args:
        log_ratio: δ clamped to [−20, 20], (B, T).
        logp: unused, (B, T).
        advantages: (B, T).
        mask: (B, T) float 0/1.
        cfg: :class:`MHPOConfig`.

    Returns:
        per-token loss (B, T) and metric ``mhpo/survival``, the mean of exp(−ζ).

    Example:
        >>> import torch, mhpo
        >>> logp = torch.zeros(1, 1, dtype=torch.float64)
        >>> # r = 1: ζ = (ln 2)^1.5 + (ln 2/0.8)^2 = 0.5771 + 0.7507 = 1.3278, exp(−ζ) = 0.2651
        >>> out = mhpo.policy_loss("mhpo", logp, logp, torch.tensor([1.0], dtype=torch.float64),
        ...                        torch.ones_like(logp))
        >>> out.per_token, out.metrics["mhpo/survival"]
        (tensor([[-0.2651]], dtype=torch.float64), tensor(0.2651, dtype=torch.float64))

    Deviations and assumptions:
        1. softplus is the plain log(1 + e^x), so at r = 1 the weight is exp(−1.328) ≈ 0.265,
           not 1; ``normalize_on_policy=True`` divides ℓ by that constant.
        2. Default aggregation ``seq_mean_token_mean``; no KL term by default.
        3. The paper's full text was not available; this is the form two independent
           secondary sources agree on exactly (see docs/objectives.md).
    """
    psi = _modulate(log_ratio, cfg)
    # ζ is computed from a detached ψ: the hazard rescales the update but is not itself a
    # target of the gradient (otherwise the policy would be pushed to shrink ζ directly).
    zeta = _hazard(psi.detach(), cfg)
    loss = -torch.exp(psi - zeta) * advantages
    if cfg.normalize_on_policy:
        loss = loss / cfg.on_policy_survival
    metrics = {"mhpo/survival": masked_mean(zeta.neg_().exp_(), mask)}  # ζ is not needed after this
    return loss, metrics
