"""Group-relative advantages and the A-HPO hysteretic weight."""

from __future__ import annotations

import torch

Tensor = torch.Tensor

ADVANTAGE_EPS = 1e-6


def group_advantages(rewards: Tensor, group_size: int, scale: str = "group") -> Tensor:
    r"""Group-relative advantages of a flat batch of rewards.

    Completions are grouped in consecutive blocks of ``group_size`` (the G samples of one
    prompt). For completion i of group g::

        scale="group":  A_i = (R_i − mean_g R) / (std_g R + 1e-6)       (GRPO)
        scale="batch":  A_i = (R_i − mean_g R) / (std_batch R + 1e-6)
        scale="none":   A_i =  R_i − mean_g R                            (Dr. GRPO)
        scale="valid":  A_i = (R_i − mean_g R) · B / (B − M)             (GPG)

    where M counts the completions of groups whose rewards are all equal (they carry no
    signal, so the batch gradient is rescaled to the informative part). std is Bessel-corrected. A group whose rewards are all equal gets A = 0 exactly, and so
    does a group of size 1.

    Args:
        rewards: (B,) scalar rewards, B divisible by ``group_size``.
        group_size: G >= 1.
        scale: ``"group"``, ``"batch"``, ``"none"`` or ``"valid"``.

    Returns:
        (B,) advantages in the rewards' floating dtype (float32 for integer rewards).

    Example:
        >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), group_size=3, scale="none")
        tensor([ 0.6667, -0.3333, -0.3333,  0.0000,  0.0000,  0.0000])
        >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), group_size=3, scale="valid")  # × 6/3
        tensor([ 1.3333, -0.6667, -0.6667,  0.0000,  0.0000,  0.0000])
    """
    if scale not in ("group", "batch", "none", "valid"):
        raise ValueError(f"Unknown advantage scale '{scale}'; use 'group', 'batch', 'none' or 'valid'.")
    if not isinstance(rewards, Tensor) or rewards.dim() != 1:
        raise ValueError("rewards must be a 1-D tensor of shape (B,), one scalar reward per completion.")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1; got {group_size!r}.")
    if rewards.numel() % group_size:
        raise ValueError(
            f"{rewards.numel()} rewards do not split into groups of {group_size}; "
            "the batch must hold a whole number of groups (B divisible by group_size)."
        )
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; fix the reward function so that it returns finite numbers.")
    if group_size == 1:
        return torch.zeros_like(rewards)

    grouped = rewards.view(-1, group_size)  # (B/G, G)
    centered = grouped - grouped.mean(-1, keepdim=True)
    if scale == "group":
        centered = centered / (grouped.std(-1, keepdim=True) + ADVANTAGE_EPS)
    elif scale == "batch":
        centered = centered / (rewards.std() + ADVANTAGE_EPS)
    # Rounding in the mean can leave ±1e-17 residues in a constant group; make them exact
    # zeros so that zero-variance groups carry no signal at all.
    constant = grouped.amax(-1, keepdim=True) == grouped.amin(-1, keepdim=True)
    if scale == "valid":  # GPG: B / (B − M), M = completions of groups whose rewards are all equal
        valid = int((~constant).sum()) * group_size
        centered = centered * (rewards.numel() / max(valid, 1))
    return torch.where(constant, torch.zeros_like(centered), centered).view(-1)


def adaptive_alpha(advantages: Tensor, alpha_min: float = 0.1, mask: Tensor | None = None) -> Tensor:
    r"""The A-HPO hysteretic weight of a rollout batch.

    ::

        α = clip(n⁺ / n⁻, alpha_min, 1),   α = 1 if n⁻ = 0

    where n⁺ and n⁻ count completions with A > 0 and A < 0 (A = 0 counts in neither; with a
    mask, completions without any counted token count in neither, since they get no update).
    Compute it over the *whole rollout batch* and pass the result as ``hysteresis=`` to every
    micro-batch's :func:`mhpo.policy_loss`.

    Args:
        advantages: (B,) per-completion advantages, or (B, T) per-token ones, in which case a
            completion's advantage is its mean over counted tokens.
        alpha_min: lower bound of α, in [0, 1].
        mask: (B, T) mask (default: every token counts).

    Returns:
        a 0-dim tensor α in [alpha_min, 1].

    Example:
        >>> adaptive_alpha(torch.tensor([1.0, -1.0, -1.0, -1.0, -1.0, 0.0]))   # 1/4
        tensor(0.2500)
    """
    if not (isinstance(alpha_min, (int, float)) and not isinstance(alpha_min, bool) and 0 <= alpha_min <= 1):
        raise ValueError(f"alpha_min must be a number in [0, 1]; got {alpha_min!r}.")
    advantages = advantages.detach()
    if advantages.dim() == 2:
        weights = torch.ones_like(advantages) if mask is None else mask.to(advantages.dtype)
        advantages = (advantages * weights).sum(-1) / weights.sum(-1).clamp(min=1)
    elif advantages.dim() != 1:
        raise ValueError(f"advantages must be (B,) or (B, T); got shape {tuple(advantages.shape)}.")
    elif mask is not None:
        advantages = torch.where(mask.sum(-1) > 0, advantages, torch.zeros_like(advantages))
    positive = (advantages > 0).sum()
    negative = (advantages < 0).sum()
    dtype = advantages.dtype if advantages.is_floating_point() else torch.get_default_dtype()
    ratio = positive.to(dtype) / negative.clamp(min=1).to(dtype)
    alpha = ratio.clamp(min=alpha_min, max=1.0)
    return torch.where(negative > 0, alpha, torch.ones_like(alpha))
