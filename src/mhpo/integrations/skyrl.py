"""SkyRL plug-in: mhpo objectives in SkyRL's policy-loss and advantage-estimator registries.

Installed with ``pip install 'mhpo[skyrl]'``; import this module in the script that starts
SkyRL, before it initialises Ray: SkyRL copies its registries to every worker through a
Ray actor, so what is registered in the driver reaches the workers. Pick an objective by its
estimator and its loss::

    import mhpo.integrations.skyrl  # noqa: F401  (registration)
    ...
    trainer.algorithm.advantage_estimator=mhpo_a_hpo
    trainer.algorithm.policy_loss_type=a_hpo
    trainer.algorithm.loss_reduction=token_mean

The estimator ``mhpo_<name>`` is the objective's rollout step (advantages at its scale, its
α folded into the negative advantages, as for verl). The loss runs the objective per token
with hysteresis off, then SkyRL's own off-policy correction (``algorithm.off_policy_correction``)
and its sum: SkyRL applies its loss reduction by scaling the advantages before the loss, which
is exact for an objective positively homogeneous in A (every one registered here).
``clip_cov``, ``kl_cov`` and ``dro`` are not, so they are not registered (SkyRL's own
``clip_cov`` and ``kl_cov`` see the scaled advantages). Where SkyRL already has a loss of the
same name (``gspo``, ``sapo``, ``cispo``), ours is registered as ``mhpo_<name>``; every
objective is also available under that prefix. docs/skyrl.md has the recipe table.
"""

from __future__ import annotations

import sys
import typing
import warnings
from typing import Any

import torch

import mhpo

from .common import grouped_advantages, merge_hyperparameters

PREFIX = "mhpo_"
# SkyRL's loss_reduction names for the aggregations it can express (it has no
# seq-mean-token-sum, and no separate token-sum).
SKYRL_REDUCTIONS = {"token_mean": "token_mean", "seq_mean_token_mean": "sequence_mean",
                    "seq_mean_token_sum_norm": "seq_mean_token_sum_norm", "mean_length": "token_mean"}  # fmt: skip
_TRANSLATION = {"eps_clip_low": "eps_low", "eps_clip_high": "eps_high"}


def _import_skyrl():
    """SkyRL's ppo_utils. SkyRL 0.3 declares Python >= 3.11, but on 3.11 pydantic refuses the
    ``typing.TypedDict`` of its tinker types; ``typing_extensions.TypedDict`` stands in for it
    while SkyRL is imported (and only then)."""
    saved = typing.TypedDict
    try:
        if sys.version_info < (3, 12):
            import typing_extensions

            typing.TypedDict = typing_extensions.TypedDict
        from skyrl.backends.skyrl_train.utils import ppo_utils
        from skyrl.train.config import AlgorithmConfig
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(f"mhpo.integrations.skyrl needs SkyRL: pip install 'mhpo[skyrl]' ({error}).") from error
    finally:
        typing.TypedDict = saved
    return ppo_utils, AlgorithmConfig


ppo_utils, AlgorithmConfig = _import_skyrl()
_SKYRL_DEFAULTS = {key: getattr(AlgorithmConfig(), key) for key in _TRANSLATION}


def expressible(name: str) -> bool:
    """Whether SkyRL can run the objective exactly: its loss reduction scales A."""
    return mhpo.get_objective(name).homogeneous


def _translated(config) -> dict[str, Any]:
    out = {}
    for theirs, ours in _TRANSLATION.items():
        value = getattr(config, theirs, None)
        if value is not None and value != _SKYRL_DEFAULTS[theirs]:
            out[ours] = value
    return out


def make_policy_loss(name: str, hyperparameters: dict[str, Any] | None = None):
    """SkyRL policy-loss function for objective ``name`` (with these hyperparameters)."""
    spec = mhpo.get_objective(name)
    explicit = dict(hyperparameters or {})
    spec.make_config(**explicit)
    reduction = SKYRL_REDUCTIONS.get(spec.aggregation)
    warned: set[str] = set()

    def policy_loss(log_probs, old_log_probs, advantages, config, loss_mask=None, rollout_logprobs=None):
        mask = torch.ones_like(log_probs) if loss_mask is None else loss_mask
        used = getattr(config, "loss_reduction", None)
        if used != reduction and used not in warned:
            warned.add(used)
            wanted = f"'{reduction}'" if reduction else "no SkyRL reduction (it has no seq-mean-token-sum)"
            warnings.warn(f"SkyRL: '{name}' aggregates as {spec.aggregation} ({wanted}); it runs with "
                          f"loss_reduction='{used}' instead.", stacklevel=2)  # fmt: skip
        hp = merge_hyperparameters(name, explicit, _translated(config), "SkyRL's algorithm config")
        out = mhpo.policy_loss(name, log_probs, old_log_probs, advantages, mask, aggregation="token_sum",
                               hysteresis="off", **hp)  # fmt: skip
        loss, mask, correction = ppo_utils.apply_off_policy_correction(
            out.per_token, old_log_probs, rollout_logprobs, mask, config.off_policy_correction
        )
        metrics = {f"objective/{key}": value.item() for key, value in out.metrics.items()}
        metrics["clip_ratio"] = sum(out.metrics[k].item() for k in ("clip/high_frac", "clip/low_frac") if k in out.metrics)
        metrics.update(correction)
        return ppo_utils.reduce_loss(loss, mask), metrics

    policy_loss.__name__ = f"mhpo_{name}_policy_loss"
    policy_loss.__doc__ = f"SkyRL policy loss for the mhpo objective '{name}' (see mhpo.integrations.skyrl)."
    return policy_loss


def make_advantage_estimator(name: str):
    """SkyRL advantage estimator ``mhpo_<name>``: the objective's rollout step."""

    def estimator(token_level_rewards, response_mask, index, **kwargs):
        advantages = grouped_advantages(name, token_level_rewards, response_mask, index, host="SkyRL")
        return advantages, advantages

    estimator.__name__ = f"mhpo_{name}_advantage"
    estimator.__doc__ = f"SkyRL advantage estimator for the mhpo objective '{name}' (see mhpo.integrations.skyrl)."
    return estimator


def registered_names() -> dict[str, str]:
    """SkyRL policy_loss_type -> mhpo objective, as registered by this module."""
    names = {}
    registry = ppo_utils.PolicyLossRegistry
    for name in filter(expressible, mhpo.list_objectives()):
        names[PREFIX + name] = name
        own = registry._functions.get(name)
        if own is None or getattr(own, "__name__", "").startswith("mhpo_"):
            names[name] = name
    return names


def register(name: str, loss_name: str | None = None, **hyperparameters: Any) -> str:
    """Register objective ``name`` with hyperparameters under ``loss_name`` (default
    ``mhpo_<name>_custom``), for a run that sets ``policy_loss_type`` to it. Returns the name."""
    if not expressible(name):
        raise ValueError(f"'{name}' is not positively homogeneous in A, so SkyRL's loss reduction (which scales "
                         "the advantages) would change it; it cannot run in SkyRL exactly.")  # fmt: skip
    loss_name = loss_name or f"{PREFIX}{name}_custom"
    ppo_utils.PolicyLossRegistry.register(loss_name, make_policy_loss(name, hyperparameters))
    return loss_name


def register_all() -> dict[str, str]:
    """Register every expressible objective's loss and estimator with SkyRL (idempotent)."""
    names = registered_names()
    losses = ppo_utils.PolicyLossRegistry._functions
    for loss_name, name in names.items():
        if not getattr(losses.get(loss_name), "__name__", "").startswith("mhpo_"):
            ppo_utils.PolicyLossRegistry.register(loss_name, make_policy_loss(name))
    estimators = ppo_utils.AdvantageEstimatorRegistry._functions
    for name in filter(expressible, mhpo.list_objectives()):
        if PREFIX + name not in estimators:
            ppo_utils.AdvantageEstimatorRegistry.register(PREFIX + name, make_advantage_estimator(name))
    return names


REGISTERED = register_all()
