"""verl plug-in: every mhpo objective in verl's policy-loss and advantage-estimator registries.

Installed with ``pip install 'mhpo[verl]'``, it loads in every process that imports verl
(the driver and every Ray worker) through verl's ``verl.plugins`` entry point;
``VERL_USE_EXTERNAL_MODULES=mhpo.integrations.verl`` keeps working. Pick an objective by its
estimator and its loss::

    algorithm.adv_estimator=mhpo_a_hpo
    actor_rollout_ref.actor.policy_loss.loss_mode=a_hpo

The estimator ``mhpo_<name>`` is the objective's rollout step (:func:`mhpo.prepare_rollout`)
over the whole rollout batch on the driver: advantages at the objective's scale, and its α
folded into the negative advantages (exact where the policy term is positively homogeneous
of degree 1 in A and branches only on its sign, which a registry-wide test checks; the
estimator refuses α for the objectives marked otherwise: ``clip_cov``, ``kl_cov``, ``dro``).
The loss then runs with hysteresis off, so α is applied once.

Loss names are registered as they are in mhpo (``grpo``, ``mhpo``, ``a_hpo``, ...). verl's own
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
  when changed from verl's defaults (read from verl's ActorConfig), set the objective's
  ``eps_low``, ``eps_high``, ``dual_clip``, ``tau_pos`` and ``tau_neg``; everything else goes in
  ``policy_loss.objective_hyperparameters``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch

import mhpo

from .common import VERL_AGGREGATIONS, grouped_advantages, merge_hyperparameters

try:
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY, register_adv_est, register_policy_loss
    from verl.workers.config import ActorConfig, PolicyLossConfig
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("mhpo.integrations.verl needs verl: pip install 'mhpo[verl]'.") from error

PREFIX = "mhpo_"


def _defaults(config_class) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}


# verl's own defaults, to tell a value the user changed from one left alone.
_VERL_DEFAULTS = _defaults(ActorConfig)
_ALGO_DEFAULTS = _defaults(AlgoConfig)
_TRANSLATION = {"clip_ratio_low": "eps_low", "clip_ratio_high": "eps_high", "clip_ratio_c": "dual_clip",
                "tau_pos": "tau_pos", "tau_neg": "tau_neg"}  # fmt: skip


@dataclasses.dataclass
class ObjectivePolicyLossConfig(PolicyLossConfig):
    """verl's PolicyLossConfig plus mhpo's objective options.

    Attributes:
        objective_hyperparameters: the objective's hyperparameters, e.g. ``{c: 1.5, use_dhp: false}``.
        objective_hysteresis: None (default): α comes from the ``mhpo_<name>`` advantage
            estimator, folded into the advantages. Set it (a float in [0, 1]) only to apply a
            fixed α in the loss on advantages from another estimator; ``adaptive`` is refused
            here, since one micro-batch is not the rollout batch A-HPO's α is defined on.
        objective_alpha_min: refused here; set ``algorithm.objective_alpha_min`` for the estimator.
    """

    objective_hyperparameters: dict = dataclasses.field(default_factory=dict)
    objective_hysteresis: Any = None
    objective_alpha_min: Any = None

    def __post_init__(self) -> None:
        """Check the objective options against ``loss_mode`` when the config is built (verl builds
        it at start, on the driver), not at the first loss call after a rollout on a cluster."""
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        name = registered_names().get(self.loss_mode)
        if name is None:
            raise ValueError(
                f"policy_loss.loss_mode={self.loss_mode!r} is not an mhpo objective, so ObjectivePolicyLossConfig's "
                f"options would be ignored; use one of {', '.join(sorted(registered_names()))}, or drop its _target_."
            )
        hyperparameters = dict(self.objective_hyperparameters or {})
        try:
            mhpo.get_objective(name).make_config(**hyperparameters)
        except (TypeError, ValueError) as error:
            raise ValueError(f"policy_loss.objective_hyperparameters for loss_mode={self.loss_mode}: {error}") from None


def recipe_overrides(name: str, hyperparameters: dict[str, Any] | None = None) -> list[str]:
    """verl overrides that run objective ``name`` with its whole recipe: its advantage step,
    its loss and its aggregation (``python -m mhpo.integrations.verl NAME`` prints them)."""
    spec = mhpo.get_objective(name)
    loss_mode = name if registered_names().get(name) == name else PREFIX + name
    aggregation = {ours: theirs for theirs, ours in VERL_AGGREGATIONS.items()}.get(spec.aggregation, "token-mean")
    lines = [
        f"algorithm.adv_estimator={PREFIX}{name}",
        f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
        f"actor_rollout_ref.actor.loss_agg_mode={aggregation}",
        "actor_rollout_ref.actor.policy_loss._target_=mhpo.integrations.verl.ObjectivePolicyLossConfig",
    ]
    if hyperparameters:
        mhpo.get_objective(name).make_config(**hyperparameters)
        pairs = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in hyperparameters.items())
        lines.append(f"+actor_rollout_ref.actor.policy_loss.objective_hyperparameters={{{pairs}}}")
    return lines


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


def _option(config, key: str) -> Any:
    if config is None:
        return None
    return config.get(key) if hasattr(config, "get") else getattr(config, key, None)


def verl_advantages(
    name: str,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index,
    *,
    advantage_scale: str | None = None,
    hysteresis: Any = None,
    alpha_min: float | None = None,
) -> torch.Tensor:
    """verl's rollout batch -> the objective's advantages (B, T), α folded in
    (:func:`mhpo.integrations.common.grouped_advantages`; rows grouped by verl's ``uid``).
    For an objective not homogeneous in A (``clip_cov``, ``kl_cov``, ``dro``) an α raises:
    set ``algorithm.objective_hysteresis`` unset or 'off', or apply a fixed α in the loss with
    ``policy_loss.objective_hysteresis`` and another estimator."""
    return grouped_advantages(name, token_level_rewards, response_mask, index, host="verl",
                              advantage_scale=advantage_scale, hysteresis=hysteresis, alpha_min=alpha_min)  # fmt: skip


def make_advantage_estimator(name: str):
    """verl advantage estimator ``mhpo_<name>``: the objective's rollout step on the driver."""
    spec = mhpo.get_objective(name)

    def estimator(token_level_rewards, response_mask, index=None, config=None, **kwargs):
        scale = None
        norm_by_std = _option(config, "norm_adv_by_std_in_grpo")
        if norm_by_std is not None and norm_by_std != _ALGO_DEFAULTS["norm_adv_by_std_in_grpo"]:
            scale = "group" if norm_by_std else "none"  # the user's explicit choice wins
            if scale != spec.advantage_scale:
                warnings.warn(f"algorithm.norm_adv_by_std_in_grpo={norm_by_std} overrides {name}'s advantage scale "
                              f"'{spec.advantage_scale}' with '{scale}'.", stacklevel=2)  # fmt: skip
        advantages = verl_advantages(name, token_level_rewards, response_mask, index, advantage_scale=scale,
                                     hysteresis=_option(config, "objective_hysteresis"),
                                     alpha_min=_option(config, "objective_alpha_min"))  # fmt: skip
        return advantages, advantages

    estimator.__name__ = f"mhpo_{name}_advantage"
    estimator.__doc__ = f"verl advantage estimator for the mhpo objective '{name}' (see mhpo.integrations.verl)."
    return estimator


def make_policy_loss(name: str):
    """verl policy-loss function for the mhpo objective ``name``."""
    spec = mhpo.get_objective(name)
    needs_estimator = spec.hysteresis is not None or spec.advantage_scale != "group"

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
        # α belongs to the rollout batch: the mhpo_<name> estimator folds it into the advantages.
        hysteresis = _policy_option(config, "objective_hysteresis")
        if hysteresis is not None and (str(hysteresis) == "adaptive" or _policy_option(config, "objective_alpha_min") is not None):
            raise ValueError(
                "policy_loss.objective_hysteresis=adaptive would use one micro-batch's advantage signs; A-HPO's α is "
                f"the rollout batch's: use algorithm.adv_estimator=mhpo_{name} (set algorithm.objective_alpha_min there)."
            )
        if hysteresis is None and needs_estimator and not getattr(policy_loss, "warned", False):
            policy_loss.warned = True
            warnings.warn(f"verl: '{name}' takes its advantage scale and α from the advantage estimator; they are "
                          f"applied only with algorithm.adv_estimator=mhpo_{name}.", stacklevel=2)  # fmt: skip
        out = mhpo.policy_loss(
            name, log_prob, old_log_prob, advantages, response_mask,
            aggregation=VERL_AGGREGATIONS[loss_agg_mode],
            hysteresis="off" if hysteresis is None else hysteresis,
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
    """Register every objective's policy loss and advantage estimator with verl (idempotent:
    a second import, e.g. through both the entry point and VERL_USE_EXTERNAL_MODULES, finds
    them registered)."""
    names = registered_names()
    for loss_mode, name in names.items():
        if not getattr(POLICY_LOSS_REGISTRY.get(loss_mode), "__name__", "").startswith("mhpo_"):
            register_policy_loss(loss_mode)(make_policy_loss(name))
    for name in mhpo.list_objectives():
        if PREFIX + name not in ADV_ESTIMATOR_REGISTRY:
            register_adv_est(PREFIX + name)(make_advantage_estimator(name))
    return names


REGISTERED = register_all()


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2 or sys.argv[1] not in mhpo.list_objectives():
        raise SystemExit(f"usage: python -m mhpo.integrations.verl OBJECTIVE (one of {', '.join(mhpo.list_objectives())})")
    print("\n".join(recipe_overrides(sys.argv[1])))
