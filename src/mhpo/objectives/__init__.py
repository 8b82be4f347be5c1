"""Every objective family; importing this package fills the registry."""

from . import cispo, clip, covariance, dppo, gmpo, gspo, m2po, mhpo, pg, reference, sapo, vespo  # noqa: F401  (registration)
from .registry import OBJECTIVES, ObjectiveSpec, get_objective, list_objectives, register_objective

__all__ = ["OBJECTIVES", "ObjectiveSpec", "get_objective", "list_objectives", "register_objective"]
