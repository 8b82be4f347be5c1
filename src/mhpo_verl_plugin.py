"""verl's entry point for mhpo (the ``verl.plugins`` group): registers every objective in the
process that imports verl, and says so loudly when it cannot.

verl loads each plug-in inside ``try``/``except`` and logs a failure at DEBUG level only, so a
broken import would leave a cluster with "unknown loss mode" errors (or verl's own loss of a
shared name) and nothing in the logs. This module, outside the mhpo package so that
it loads even when ``import mhpo`` itself fails, imports :mod:`mhpo.integrations.verl`; if
that fails it logs the error with its traceback at ERROR level, warns, and makes
verl's loss and estimator lookups name the import error when a name is not found.
"""

from __future__ import annotations

import logging
import os
import warnings

logger = logging.getLogger("mhpo_verl_plugin")

IMPORT_ERROR: BaseException | None = None


def _explain(lookup):
    def wrapped(name):
        try:
            return lookup(name)
        except (KeyError, ValueError, NotImplementedError) as error:
            raise ValueError(
                f"{error}. mhpo's verl plug-in failed to import in this process (pid {os.getpid()}), so no mhpo "
                f"objective is registered here: {IMPORT_ERROR!r}. Fix that import error (its traceback is in this "
                "process's log), e.g. by reinstalling with pip install 'mhpo[verl]'."
            ) from IMPORT_ERROR

    wrapped.__name__ = getattr(lookup, "__name__", "lookup")
    wrapped.__doc__ = lookup.__doc__
    wrapped.__wrapped__ = lookup
    return wrapped


def _report(error: BaseException) -> None:
    global IMPORT_ERROR
    IMPORT_ERROR = error
    logger.error("mhpo's verl plug-in failed to import in process %d; mhpo objectives are NOT registered here",
                 os.getpid(), exc_info=error)  # fmt: skip
    warnings.warn(f"mhpo's verl plug-in failed to import: {error!r}", RuntimeWarning, stacklevel=2)
    from verl.trainer.ppo import core_algos

    core_algos.get_policy_loss_fn = _explain(core_algos.get_policy_loss_fn)
    core_algos.get_adv_estimator_fn = _explain(core_algos.get_adv_estimator_fn)


try:
    import mhpo.integrations.verl  # noqa: F401  (registration)
except Exception as error:  # any failure must be visible, not only ImportError
    _report(error)
