"""A verl worker for the Ray test: it never imports mhpo itself, so whatever it finds in
verl's registries arrived through the ``verl.plugins`` entry point when verl was imported."""

from __future__ import annotations

import os
import sys

import torch
from verl.single_controller.base import Worker
from verl.single_controller.base.decorator import Dispatch, register


class RegistryProbe(Worker):
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def probe(self, loss_modes: list[str], estimators: list[str], call: dict) -> dict:
        from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY, get_policy_loss_fn

        loaded_by_plugin = "mhpo.integrations.verl" in sys.modules
        missing_losses = [n for n in loss_modes if getattr(POLICY_LOSS_REGISTRY.get(n), "__module__", "") != "mhpo.integrations.verl"]
        missing_estimators = [n for n in estimators if n not in ADV_ESTIMATOR_REGISTRY]
        fn = get_policy_loss_fn(call["loss_mode"])
        logp = torch.tensor(call["logp"], dtype=torch.float64, requires_grad=True)
        loss, _ = fn(torch.tensor(call["old_logp"], dtype=torch.float64), logp, torch.tensor(call["advantages"], dtype=torch.float64),
                     torch.tensor(call["mask"], dtype=torch.float64), loss_agg_mode="token-mean", config=call["config"])  # fmt: skip
        (grad,) = torch.autograd.grad(loss, logp)
        return {"pid": os.getpid(), "plugin": loaded_by_plugin, "missing_losses": missing_losses,
                "missing_estimators": missing_estimators, "loss": loss.item(), "grad": grad.tolist(),
                "env": os.environ.get("VERL_USE_EXTERNAL_MODULES")}  # fmt: skip
