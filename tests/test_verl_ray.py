"""verl inside its own Ray workers, as verl's CPU tests run them: every worker finds every mhpo
loss and estimator registered through the ``verl.plugins`` entry point alone, and one loss
call there gives the driver's numbers. Then a broken plug-in import is loud, not swallowed."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch

import mhpo
from batches import make_batch

pytest.importorskip("verl", reason="the verl integration needs mhpo[verl]")
ray = pytest.importorskip("ray")

HERE = pathlib.Path(__file__).parent


def test_every_worker_registers_every_objective_through_the_entry_point():
    from omegaconf import OmegaConf
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    from mhpo.integrations.verl import registered_names
    from verl_ray_worker import RegistryProbe

    b = make_batch(seed=91, spread=0.8)
    config = OmegaConf.create({
        "clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0, "tau_pos": 1.0,
        "tau_neg": 1.05, "loss_scale_factor": None,
        "policy_loss": {"loss_mode": "mhpo", "objective_hyperparameters": {}}, "global_batch_info": {},
    })  # fmt: skip
    tokens = b.advantages.unsqueeze(-1).expand_as(b.mask)
    call = {"loss_mode": "mhpo", "logp": b.logp.tolist(), "old_logp": b.old_logp.tolist(), "advantages": tokens.tolist(),
            "mask": b.mask.tolist(), "config": config}  # fmt: skip
    logp = b.logp.detach().clone().requires_grad_(True)
    driver_loss, _ = get_policy_loss_fn("mhpo")(b.old_logp, logp, tokens, b.mask, loss_agg_mode="token-mean", config=config)
    (driver_grad,) = torch.autograd.grad(driver_loss, logp)

    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_USE_EXTERNAL_PLUGINS")}
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
                                "VERL_USE_EXTERNAL_MODULES": "", "VERL_USE_EXTERNAL_PLUGINS": "auto"}}  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=runtime_env, ignore_reinit_error=True,
             log_to_driver=False)  # fmt: skip
    try:
        pool = RayResourcePool([2], use_gpu=False, max_colocate_count=1)  # one CPU per worker (verl asks 10)
        group = RayWorkerGroup(resource_pool=pool, ray_cls_with_init=RayClassWithInitArgs(cls=ray.remote(RegistryProbe)),
                               ray_wait_register_center_timeout=120)  # fmt: skip
        results = group.probe(sorted(registered_names()), [f"mhpo_{n}" for n in mhpo.list_objectives()], call)
    finally:
        ray.shutdown()
    assert len(results) == 2 and len({r["pid"] for r in results}) == 2 and os.getpid() not in {r["pid"] for r in results}
    for result in results:
        assert result["plugin"] and not result["env"]
        assert result["missing_losses"] == [] and result["missing_estimators"] == []
        assert result["loss"] == pytest.approx(driver_loss.item(), rel=1e-13, abs=1e-15)
        torch.testing.assert_close(torch.tensor(result["grad"], dtype=torch.float64), driver_grad, rtol=1e-13, atol=1e-15)


def test_a_broken_plugin_import_is_logged_and_named_at_first_use():
    """verl logs a failing plug-in at DEBUG only; mhpo's entry point logs it at ERROR with the
    traceback, and verl's lookups then name it instead of a bare "unknown loss mode"."""
    code = (
        "import sys\n"
        "sys.modules['mhpo.integrations.verl'] = None  # the plug-in module cannot be imported\n"
        "import verl\n"
        "from verl.trainer.ppo.core_algos import get_policy_loss_fn\n"
        "get_policy_loss_fn('mhpo')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_USE_EXTERNAL_PLUGINS")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "mhpo's verl plug-in failed to import in process" in result.stderr  # the ERROR log line
    assert "ModuleNotFoundError: import of mhpo.integrations.verl halted" in result.stderr  # with its traceback
    assert "mhpo's verl plug-in failed to import in this process" in result.stderr.splitlines()[-1]  # at first use
