"""mhpo: stable policy optimisation for GRPO-style RL of language models.

Every objective is a pure function of tensors, registered by name::

    import mhpo
    out = mhpo.policy_loss("mhpo", logp, old_logp, advantages, mask)
    out.loss.backward()

Importing this package imports torch only (no transformers, trl, verl or ray).
"""

from .advantages import adaptive_alpha, group_advantages
from .aggregation import aggregate
from .kl import kl_penalty
from .loss import LossOutput, gradient_weight, hysteresis_setting, policy_loss
from .normalisers import global_normalisers
from .objectives import ObjectiveSpec, get_objective, list_objectives, register_objective
from .objectives.registry import AGGREGATIONS, RolloutRules
from .rollout import RolloutBatch, prepare_rollout

__version__ = "0.1.0"

__all__ = [
    "AGGREGATIONS",
    "LossOutput",
    "ObjectiveSpec",
    "adaptive_alpha",
    "aggregate",
    "get_objective",
    "global_normalisers",
    "gradient_weight",
    "group_advantages",
    "hysteresis_setting",
    "kl_penalty",
    "list_objectives",
    "policy_loss",
    "prepare_rollout",
    "register_objective",
    "RolloutBatch",
    "RolloutRules",
]
