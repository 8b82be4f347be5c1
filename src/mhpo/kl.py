"""Per-token estimators of KL(π_θ ‖ π_ref) from sampled log-probs (Schulman's k1, k2, k3)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str = "k3", *, bound: float = 20.0) -> Tensor:
    r"""Per-token KL estimate, (B, T).

    With ρ = ref_logp − logp (clamped to [−bound, bound] so that exp stays finite)::

        k1 = −ρ,   k2 = ρ²/2,   k3 = exp(ρ) − ρ − 1

    k3 is unbiased and never negative, the usual choice (GRPO, verl's ``low_var_kl``).

    Example:
        >>> kl_penalty(torch.tensor([[0.0]]), torch.tensor([[1.0]]), "k3")   # e − 1 − 1
        tensor([[0.7183]])
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"Unknown kl_estimator '{estimator}'; use one of {', '.join(KL_ESTIMATORS)}.")
    rho = (ref_logp - logp).clamp(-bound, bound)
    if estimator == "k1":
        return -rho
    if estimator == "k2":
        return rho.square() / 2
    return torch.exp(rho) - rho - 1
