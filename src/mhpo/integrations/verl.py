"""verl plug-in: every mhpo objective in verl's policy-loss registry.

Load it in every Ray worker with ``VERL_USE_EXTERNAL_MODULES=mhpo.integrations.verl`` and pick
an objective by name::

    actor_rollout_ref.actor.policy_loss.loss_mode=mhpo
    actor_rollout_ref.actor.policy_loss._target_=mhpo.integrations.verl.ObjectivePolicyLossConfig
    +actor_rollout_ref.actor.policy_loss.objective_hyperparameters={c: 1.5}

Names are registered as they are in mhpo (``grpo``, ``mhpo``, ``a_hpo``, ...). verl's own
``vanilla``, ``gspo``, ``sapo``, ``cispo`` and ``geo_mean`` stay untouched: where verl already
has a loss of the same name (``gspo``, ``sapo``, ``cispo``), ours is registered with the
prefix ``mhpo_`` (``mhpo_gspo``), and every objective is also available under that prefix.

Conventions, as verl calls a policy loss:

* ``rollout_is_weights`` multiply the policy term (mhpo's ``is_weights``);
* ``config.global_batch_info`` (dp_size, batch_num_tokens, global_batch_size,
  loss_scale_factor) become the global normalisers, and the loss is multiplied by dp_size
  because FSDP averages gradients: the data-parallel gradient is the global mean;
* ``loss_agg_mode`` is honoured (``token-mean`` -> ``token_mean`` and so on); HPO's
  ``mean_length`` has no verl name and equals ``token-mean`` over a global mini-batch;
* verl's ``clip_ratio_low``, ``clip_ratio_high``, ``clip_ratio_c``, ``tau_pos`` and ``tau_neg``,
  when changed from verl's defaults, set the objective's ``eps_low``, ``eps_high``,
  ``dual_clip``, ``tau_pos`` and ``tau_neg``; everything else goes in
  ``policy_loss.objective_hyperparameters``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

import mhpo

from .common import VERL_AGGREGATIONS, merge_hyperparameters

try:
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, register_policy_loss
    from verl.workers.config import PolicyLossConfig
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("mhpo.integrations.verl needs verl: pip install 'mhpo[verl]'.") from error

PREFIX = "mhpo_"
# verl ActorConfig defaults, to tell a value the user changed from one left alone.
_VERL_DEFAULTS = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0, "tau_pos": 1.0, "tau_neg": 1.05}
_TRANSLATION = {"clip_ratio_low": "eps_low", "clip_ratio_high": "eps_high", "clip_ratio_c": "dual_clip",
                "tau_pos": "tau_pos", "tau_neg": "tau_neg"}  # fmt: skip


@dataclasses.dataclass
class ObjectivePolicyLossConfig(PolicyLossConfig):
    """verl's PolicyLossConfig plus mhpo's objective options.

    Attributes:
        objective_hyperparameters: the objective's hyperparameters, e.g. ``{c: 1.5, use_dhp: false}``.
        objective_hysteresis: weight of A<0 completions: a float, ``adaptive`` or None (objective default).
            In verl the loss sees one micro-batch, so ``adaptive`` uses that micro-batch's advantage signs.
        objective_alpha_min: lower bound of the adaptive weight (default 0.1).
    """

    objective_hyperparameters: dict = dataclasses.field(default_factory=dict)
    objective_hysteresis: Any = None
    objective_alpha_min: Any = None


def _hyperparameters(name: str, config) -> dict[str, Any]:
    policy = config.get("policy_loss") if hasattr(config, "get") else getattr(config, "policy_loss", None)
    explicit = dict((policy.get("objective_hyperparameters") if policy is not None else None) or {})
    translated = {}
    for verl_key, ours in _TRANSLATION.items():
        value = config.get(verl_key) if hasattr(config, "get") else getattr(config, verl_key, None)
        if value is not None and value != _VERL_DEFAULTS[verl_key]:
            translated[ours] = value
    return merge_hyperparameters(name, explicit, translated, "verl's actor config")


def _policy_option(config, key: str) -> Any:
    policy = config.get("policy_loss") if hasattr(config, "get") else getattr(config, "policy_loss", None)
    return policy.get(key) if policy is not None and hasattr(policy, "get") else None


def make_policy_loss(name: str):
    """verl policy-loss function for the mhpo objective ``name``."""
    spec = mhpo.get_objective(name)

    def policy_loss(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config=None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if config is None:
            raise ValueError(f"verl passed no actor config to the '{name}' policy loss.")
        if loss_agg_mode not in VERL_AGGREGATIONS:
            raise ValueError(f"loss_agg_mode '{loss_agg_mode}' is not one of {list(VERL_AGGREGATIONS)}.")
        info = dict(config.get("global_batch_info") or {})
        dp_size = int(info.get("dp_size") or 1)
        norms: dict[str, Any] = {
            "max_length": info.get("loss_scale_factor") or config.get("loss_scale_factor") or response_mask.shape[-1]
        }
        if info.get("batch_num_tokens"):
            norms["num_tokens"] = float(info["batch_num_tokens"])
        if info.get("global_batch_size"):
            norms["num_seqs"] = float(info["global_batch_size"])
        if "num_tokens" in norms and "num_seqs" in norms:
            norms["mean_length"] = norms["num_tokens"] / norms["num_seqs"]
        hysteresis = _policy_option(config, "objective_hysteresis")
        hysteresis = spec.hysteresis if hysteresis is None else hysteresis
        alpha_min = _policy_option(config, "objective_alpha_min")
        out = mhpo.policy_loss(
            name, log_prob, old_log_prob, advantages, response_mask,
            aggregation=VERL_AGGREGATIONS[loss_agg_mode],
            hysteresis=hysteresis,
            alpha_min=alpha_min if hysteresis == "adaptive" else None,
            is_weights=rollout_is_weights,
            **norms, **_hyperparameters(name, config),
        )  # fmt: skip
        metrics = {f"actor/objective/{key}": value.item() for key, value in out.metrics.items()}
        # verl's own dashboard keys
        metrics["actor/ppo_kl"] = out.metrics["kl/old_k3"].item()
        if "clip/high_frac" in out.metrics or "clip/low_frac" in out.metrics:
            metrics["actor/pg_clipfrac"] = sum(out.metrics[k].item() for k in ("clip/high_frac", "clip/low_frac") if k in out.metrics)
        return out.loss * dp_size, metrics

    policy_loss.__name__ = f"mhpo_{name}_policy_loss"
    policy_loss.__doc__ = f"verl policy loss for the mhpo objective '{name}' (see mhpo.integrations.verl)."
    return policy_loss


def registered_names() -> dict[str, str]:
    """verl loss_mode -> mhpo objective, as registered by this module."""
    names = {}
    for name in mhpo.list_objectives():
        names[PREFIX + name] = name
        own = POLICY_LOSS_REGISTRY.get(name)
        if own is None or getattr(own, "__name__", "").startswith("mhpo_"):
            names[name] = name
    return names


def register_all() -> dict[str, str]:
    """Register every objective with verl (idempotent)."""
    names = registered_names()
    for loss_mode, name in names.items():
        register_policy_loss(loss_mode)(make_policy_loss(name))
    return names


REGISTERED = register_all()
