"""One library step per rollout batch: from rewards and completion masks to what every
micro-batch's :func:`mhpo.policy_loss` needs, by the objective's recipe.

Every host calls this instead of rebuilding the recipe: the CPU trainer, the TRL plug-in and
the verl plug-in's advantage estimator. A further host needs only an adapter that hands it
the rollout batch's rewards (one per completion, grouped by prompt) and masks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .advantages import adaptive_alpha, group_advantages
from .loss import hysteresis_setting
from .normalisers import global_normalisers
from .objectives import get_objective
from .objectives.registry import ADVANTAGE_SCALES, ObjectiveSpec

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class RolloutBatch:
    """What one rollout batch gives its micro-batches.

    Attributes:
        advantages: (B,) group-relative advantages at the objective's (or the user's) scale.
        hysteresis: 0-dim α of the whole batch (fixed, or A-HPO's adaptive one), or None when
            the objective has no hysteresis.
        normalisers: the whole batch's ``num_tokens``, ``num_seqs``, ``mean_length`` (and
            ``max_length`` when given), for a host that takes one optimizer step per batch; a
            host with several mini-batches computes them per mini-batch with
            :func:`mhpo.global_normalisers`.
        advantage_scale: the scale the advantages were computed with.
        mask: (B, T) the masks the normalisers were counted from (for :meth:`minibatch`).
        max_length: the completion token budget given, if any.
    """

    advantages: Tensor
    hysteresis: Tensor | None
    normalisers: dict[str, float]
    advantage_scale: str
    mask: Tensor | None = None
    max_length: int | None = None

    def loss_options(self) -> dict[str, Any]:
        """Keywords for every micro-batch's policy_loss: the batch's α and normalisers."""
        return {"hysteresis": self.hysteresis, **self.normalisers}

    def minibatch(self, rows: Tensor) -> RolloutBatch:
        """The part of this batch that one optimizer step learns from: its rows' advantages
        and normalisers, with the whole batch's α (A-HPO defines α over the rollout batch).

        >>> import torch, mhpo
        >>> batch = mhpo.prepare_rollout("a_hpo", torch.tensor([1.0, 0, 0, 0]), torch.ones(4, 3), group_size=4)
        >>> part = batch.minibatch(torch.tensor([0, 1]))
        >>> part.advantages, part.hysteresis, part.normalisers["num_tokens"]
        (tensor([ 1.5000, -0.5000]), tensor(0.3333), 6.0)
        """
        if self.mask is None:
            raise ValueError("this RolloutBatch was built without its mask; build it with mhpo.prepare_rollout.")
        mask = self.mask[rows]
        normalisers = global_normalisers(mask, max_length=self.max_length, all_reduce=False)
        return dataclasses.replace(self, advantages=self.advantages[rows], normalisers=normalisers, mask=mask)

    def folded_advantages(self) -> Tensor:
        """(B,) advantages with α multiplied into the negative ones, for a host whose loss
        cannot be handed α (verl); run the loss with ``hysteresis="off"``. Exact for every
        objective with ``spec.homogeneous`` (its policy term is positively homogeneous of degree
        1 in A and branches only on its sign, tested registry-wide); wrong for the others."""
        if self.hysteresis is None:
            return self.advantages
        alpha = self.hysteresis.to(self.advantages)
        return torch.where(self.advantages < 0, alpha * self.advantages, self.advantages)


def prepare_rollout(
    name: str | ObjectiveSpec,
    rewards: Tensor,
    mask: Tensor,
    *,
    group_size: int,
    advantage_scale: str | None = None,
    hysteresis: Any = None,
    alpha_min: float | None = None,
    max_length: int | None = None,
) -> RolloutBatch:
    """Advantages, α and normalisers of a whole rollout batch, by the objective's recipe.

    Args:
        name: a registered objective.
        rewards: (B,) one reward per completion, the G completions of a prompt consecutive.
        mask: (B, T) the completions' loss masks (a (B, 1) column of "has counted tokens"
            flags is enough for α; the normalisers then count one token per completion).
        group_size: G.
        advantage_scale: ``group``, ``batch`` or ``none``; None = the objective's.
        hysteresis, alpha_min: the user's options (:func:`mhpo.hysteresis_setting`); None =
            the objective's.
        max_length: the completion token budget, for ``dr_grpo``'s constant normaliser.

    Example:
        >>> import torch, mhpo
        >>> batch = mhpo.prepare_rollout("a_hpo", torch.tensor([1.0, 0, 0, 0]), torch.ones(4, 3), group_size=4)
        >>> batch.advantages, batch.hysteresis
        (tensor([ 1.5000, -0.5000, -0.5000, -0.5000]), tensor(0.3333))
    """
    spec = get_objective(name)
    scale = spec.advantage_scale if advantage_scale is None else advantage_scale
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"Unknown advantage scale '{scale}'; use one of {', '.join(ADVANTAGE_SCALES)}.")
    if not isinstance(mask, Tensor) or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"mask must be (B, T) with B = {rewards.shape[0]} rows, one per reward.")
    setting, alpha_min = hysteresis_setting(name, hysteresis, alpha_min)
    advantages = group_advantages(rewards, group_size, scale=scale)
    if setting == "adaptive":  # over the whole rollout batch, as A-HPO defines it
        alpha = adaptive_alpha(advantages, alpha_min, mask=mask)
    elif setting is None:
        alpha = None
    else:
        alpha = torch.tensor(setting, dtype=torch.float64, device=advantages.device)  # exactly the α asked for
    normalisers = global_normalisers(mask, max_length=max_length, all_reduce=False)
    return RolloutBatch(advantages, alpha, normalisers, scale, mask, max_length)
