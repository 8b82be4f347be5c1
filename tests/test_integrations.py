"""TRL and verl adapters: the same tensors give the same loss and gradient through TRL, verl
and mhpo.policy_loss; real GRPOTrainer runs; verl's own registry resolves our objectives."""

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import mhpo
from batches import SELECTION_OFF, make_batch

trl = pytest.importorskip("trl", reason="the TRL integration needs mhpo[trl]")
verl = pytest.importorskip("verl", reason="the verl integration needs mhpo[verl]")

from omegaconf import OmegaConf  # noqa: E402  (verl's dependency)

from mhpo.integrations.common import VERL_AGGREGATIONS  # noqa: E402
from mhpo.integrations.trl import ObjectiveGRPOConfig, trl_policy_loss  # noqa: E402
from mhpo.integrations.verl import ObjectivePolicyLossConfig, registered_names  # noqa: E402

ALL = mhpo.list_objectives()
OURS_TO_VERL = {ours: verl_name for verl_name, ours in VERL_AGGREGATIONS.items()}
OURS_TO_VERL["mean_length"] = "token-mean"  # equal when L̄ is the mini-batch's own mean length


def verl_config(name, batch, **overrides):
    lengths = batch.mask.sum(-1)
    config = {
        "clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0,
        "tau_pos": 1.0, "tau_neg": 1.05, "loss_scale_factor": None,
        "policy_loss": {"loss_mode": name, "objective_hyperparameters": {}},
        "global_batch_info": {"dp_size": 1, "batch_num_tokens": float(lengths.sum()),
                              "global_batch_size": float((lengths > 0).sum()), "loss_scale_factor": batch.mask.shape[1]},
    }  # fmt: skip
    config.update(overrides)
    return OmegaConf.create(config)


def verl_mode(name):
    return name if name in registered_names() else "mhpo_" + name


def trl_inputs(batch, **extra):
    lengths = batch.mask.sum(-1)
    inputs = {
        "completion_mask": batch.mask,
        "advantages": batch.advantages,
        "old_per_token_logps": batch.old_logp,
        "num_items_in_batch": lengths.sum(),
        "mhpo_num_seqs": (lengths > 0).sum(),
    }
    inputs.update(extra)
    return inputs


def trl_call(name, batch, logp, inputs, hyperparameters=None):
    spec = mhpo.get_objective(name)
    if spec.hysteresis == "adaptive":
        inputs = {**inputs, "mhpo_alpha": mhpo.adaptive_alpha(batch.advantages, mask=batch.mask)}
    return trl_policy_loss(
        name, logp, inputs, hyperparameters=hyperparameters or {}, aggregation=None, hysteresis=spec.hysteresis,
        alpha_min=None, beta=0.0, max_completion_length=batch.mask.shape[1], training=True, num_processes=1,
        gradient_accumulation_steps=1, steps_per_generation=1, is_correction="importance_sampling_ratio" in inputs,
    )  # fmt: skip


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("with_is_weights", [False, True])
def test_same_loss_and_gradient_through_trl_verl_and_mhpo(name, with_is_weights):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    b = make_batch(seed=71, spread=0.8)
    spec = mhpo.get_objective(name)
    is_weights = (0.5 + torch.rand(b.mask.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    kwargs = {"is_weights": is_weights} if with_is_weights else {}
    reference = mhpo.policy_loss(name, *b.inputs(), max_length=b.mask.shape[1], **kwargs)
    (ref_grad,) = torch.autograd.grad(reference.loss, b.logp)

    extra = {"importance_sampling_ratio": is_weights} if with_is_weights else {}
    via_trl = trl_call(name, b, b.logp, trl_inputs(b, **extra))
    (trl_grad,) = torch.autograd.grad(via_trl.loss, b.logp)

    fn = get_policy_loss_fn(verl_mode(name))
    # In verl, α arrives folded into the advantages by the mhpo_<name> estimator.
    alpha = {"adaptive": mhpo.adaptive_alpha(b.advantages, mask=b.mask), None: 1.0}.get(spec.hysteresis, spec.hysteresis)
    folded = torch.where(b.advantages < 0, alpha * b.advantages, b.advantages)
    verl_loss, verl_metrics = fn(
        b.old_logp, b.logp, folded.unsqueeze(-1).expand_as(b.mask), b.mask,
        loss_agg_mode=OURS_TO_VERL[spec.aggregation], config=verl_config(verl_mode(name), b),
        rollout_is_weights=is_weights if with_is_weights else None,
    )  # fmt: skip
    (verl_grad,) = torch.autograd.grad(verl_loss, b.logp)

    for loss, grad in ((via_trl.loss, trl_grad), (verl_loss, verl_grad)):
        torch.testing.assert_close(loss, reference.loss, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-11, atol=1e-14)
    assert ref_grad.abs().max() > 1e-3
    assert math.isfinite(verl_metrics["actor/ppo_kl"])
    assert any(k.startswith("actor/objective/") for k in verl_metrics)


def test_framework_hyperparameter_conventions_agree():
    """CISPO's cap: TRL epsilon_high=5.0 (absolute) == verl clip_ratio_high=4.0 (offset) == ours eps_high=4.0."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    b = make_batch(seed=72, spread=2.5)
    ours = mhpo.policy_loss("cispo", *b.inputs(), eps_high=3.0, max_length=7)
    args = ObjectiveGRPOConfig(output_dir="/tmp/unused", objective="cispo", epsilon_high=4.0, use_cpu=True, report_to="none")
    assert args.objective_hyperparameters == {"eps_high": 3.0}
    via_trl = trl_call("cispo", b, b.logp, trl_inputs(b), args.objective_hyperparameters)
    fn = get_policy_loss_fn(verl_mode("cispo"))
    via_verl, _ = fn(b.old_logp, b.logp, b.advantages.unsqueeze(-1).expand_as(b.mask), b.mask, loss_agg_mode="token-mean",
                     config=verl_config(verl_mode("cispo"), b, clip_ratio_high=3.0))  # fmt: skip
    torch.testing.assert_close(via_trl.loss, ours.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(via_verl, ours.loss, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="set it in one place"):
        ObjectiveGRPOConfig(output_dir="/tmp/unused", objective="dapo", epsilon_high=0.3,
                            objective_hyperparameters={"eps_high": 0.28}, use_cpu=True, report_to="none")  # fmt: skip


def test_trl_config_rejects_what_would_bypass_or_ignore_the_objective():
    common = dict(output_dir="/tmp/unused", use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="use_liger_kernel=True"):
        ObjectiveGRPOConfig(objective="mhpo", use_liger_kernel=True, **common)
    with pytest.raises(ValueError, match="objective='gspo'"):
        ObjectiveGRPOConfig(objective="grpo", importance_sampling_level="sequence", **common)
    with pytest.raises(ValueError, match="Unknown objective 'mhp'"):
        ObjectiveGRPOConfig(objective="mhp", **common)
    with pytest.raises(ValueError, match="no hyperparameter 'cc'"):
        ObjectiveGRPOConfig(objective="mhpo", objective_hyperparameters={"cc": 1}, **common)


def test_trl_adapter_scales_for_accumulation_and_processes():
    """Two processes x two accumulation steps: each micro-batch's loss uses the counts of the
    whole optimizer step, times the process count (DDP averages)."""
    b = make_batch(seed=73)
    lengths = b.mask.sum(-1)
    inputs = trl_inputs(b, num_items_in_batch=lengths.sum() * 4, mhpo_num_seqs=(lengths > 0).sum() * 4)
    out = trl_policy_loss(
        "dapo", b.logp, inputs, hyperparameters={}, aggregation=None, hysteresis=None, alpha_min=None, beta=0.0,
        max_completion_length=7, training=True, num_processes=2, gradient_accumulation_steps=2,
        steps_per_generation=2, is_correction=False,
    )  # fmt: skip
    # token_mean over a step of 2 processes x 2 micro-batches with equal counts: Σ/(4N), times 2 processes
    plain = mhpo.policy_loss("dapo", *b.inputs(), aggregation="token_sum").loss / (4 * lengths.sum()) * 2
    torch.testing.assert_close(out.loss, plain, rtol=1e-13, atol=0)


def test_verl_resolves_objectives_through_its_own_registry_in_a_fresh_process():
    """Installed, the plug-in loads through verl's `verl.plugins` entry point in every process
    that imports verl (no configuration); VERL_USE_EXTERNAL_MODULES still works alongside it
    (the module is then loaded twice, which registration tolerates)."""
    # verl's own losses of the same name stay verl's; ours are reached with the prefix
    names = [n if registered_names().get(n) == n else "mhpo_" + n for n in ALL]
    assert {n for n in ALL if registered_names().get(n) != n} == {
        "gspo", "sapo", "cispo", "dppo_tv", "dppo_kl", "clip_cov", "kl_cov", "gpg", "dro"}  # fmt: skip
    code = (
        "import verl\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn\n"
        "import mhpo\n"
        f"names = {names!r}\n"
        "fns = [get_policy_loss_fn(n) for n in names] + [get_adv_estimator_fn('mhpo_' + n) for n in mhpo.list_objectives()]\n"
        "assert all(f.__module__ == 'mhpo.integrations.verl' for f in fns), fns\n"
        "print(len(fns))\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_USE_EXTERNAL_PLUGINS")}
    for extra in ({}, {"VERL_USE_EXTERNAL_MODULES": "mhpo.integrations.verl"}):
        result = subprocess.run([sys.executable, "-c", code], env={**base, **extra}, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == str(2 * len(ALL))
    without = subprocess.run([sys.executable, "-c", "import verl\nfrom verl.trainer.ppo.core_algos import "
                              "get_policy_loss_fn\nget_policy_loss_fn('mhpo')"],
                             env={**base, "VERL_USE_EXTERNAL_PLUGINS": "none"},
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert without.returncode != 0 and "Unsupported loss mode: mhpo" in without.stderr


def test_verl_policy_loss_config_subclass_carries_hyperparameters():
    cfg = ObjectivePolicyLossConfig(loss_mode="mhpo", objective_hyperparameters={"c": 2.0})
    assert cfg.get("objective_hyperparameters") == {"c": 2.0} and cfg.loss_mode == "mhpo"


ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_verl_recipe_composes_with_verls_own_config():
    """The launch script's overrides compose onto verl's ppo_trainer config, the actor config
    instantiates (with our PolicyLossConfig), and the objective resolves by name."""
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.utils.config import omega_conf_to_dataclass

    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    overrides = subprocess.run(["bash", str(ROOT / "examples" / "verl_mhpo_qwen7b.sh"), "--print-overrides"],
                               capture_output=True, text=True, check=True, env=env).stdout.splitlines()  # fmt: skip
    assert "actor_rollout_ref.actor.policy_loss.loss_mode=mhpo" in overrides
    config_dir = str(pathlib.Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, ObjectivePolicyLossConfig)
    assert actor.policy_loss.objective_hyperparameters == {"c": 1.5, "k_pos": 1.5, "lam_pos": 1.0, "k_neg": 2.0, "lam_neg": 0.8}
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    assert get_adv_estimator_fn(cfg.algorithm.adv_estimator).__name__ == "mhpo_mhpo_advantage"
    fn = get_policy_loss_fn(actor.policy_loss.loss_mode)
    b = make_batch(seed=74)
    loss, _ = fn(b.old_logp, b.logp, b.advantages.unsqueeze(-1).expand_as(b.mask), b.mask,
                 loss_agg_mode=actor.loss_agg_mode, config=actor)  # fmt: skip
    expected = mhpo.policy_loss("mhpo", *b.inputs(), aggregation="seq_mean_token_mean")
    torch.testing.assert_close(loss, expected.loss, rtol=1e-12, atol=0)


def test_trl_recipe_builds_a_valid_config(monkeypatch):
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("trl_mhpo", ROOT / "examples" / "trl_mhpo.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "trl_mhpo", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    script, config = module.build_config(["--output_dir", "/tmp/unused", "--use_cpu", "true", "--bf16", "false",
                                          "--objective_hyperparameters", '{"c": 2.0}'])  # fmt: skip
    assert isinstance(config, ObjectiveGRPOConfig)
    assert config.objective == "mhpo" and config.objective_hyperparameters == {"c": 2.0}
    assert config.num_generations == 8 and config.num_iterations == 2
    for name in ("accelerate_ddp.yaml", "accelerate_zero2.yaml"):
        values = yaml.safe_load((ROOT / "examples" / name).read_text())
        assert values["num_processes"] == 8 and values["mixed_precision"] == "bf16"
    from accelerate.commands.config.config_args import ClusterConfig

    assert ClusterConfig.from_yaml_file(str(ROOT / "examples" / "accelerate_ddp.yaml")).num_processes == 8
    # The docstring's own command for another objective (it failed with "invalid Any value").
    cpu = ["--output_dir", "/tmp/unused", "--use_cpu", "true", "--bf16", "false"]
    _, config = module.build_config(cpu + ["--objective", "a_hpo", "--objective_hysteresis", "adaptive"])
    assert (config.objective, config.objective_hysteresis) == ("a_hpo", "adaptive")
    _, config = module.build_config(cpu + ["--objective", "grpo", "--objective_hysteresis", "0.6"])
    assert config.objective_hysteresis == 0.6


@pytest.mark.parametrize(
    "options, message",
    [
        ({"objective": "grpo", "objective_alpha_min": 0.3}, "alpha_min only applies with adaptive hysteresis"),
        ({"objective": "grpo", "objective_hysteresis": "1.5"}, "hysteresis must be in \\[0, 1\\]"),
        ({"objective": "hpo", "objective_hysteresis": "adaptve"}, "hysteresis must be a number in \\[0, 1\\] or 'adaptive'"),
        ({"objective": "a_hpo", "objective_alpha_min": 2.0}, "alpha_min must be in \\[0, 1\\]"),
    ],
)
def test_trl_config_validates_hysteresis_at_construction(options, message):
    with pytest.raises(ValueError, match=message):
        ObjectiveGRPOConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False, **options)


@pytest.mark.parametrize("name", ALL)
def test_trainer_and_trl_give_the_same_loss_from_rewards(name):
    """From the same rewards, masks and log-probs: mhpo's trainer path (the library's rollout
    step, then policy_loss with the batch's normalisers) and the TRL path (the plug-in's
    rollout step on TRL's rewards, then its loss) give the same loss and gradient in float64."""
    from mhpo.integrations.trl import trl_rollout

    b = make_batch(batch=8, seed=21, spread=0.4, group_size=4)
    B, T = b.mask.shape
    rewards = torch.tensor([(i * 7) % 5 / 4 for i in range(B)], dtype=torch.float64)
    config = ObjectiveGRPOConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False, objective=name)
    # mhpo's trainer: one mini-batch, the rollout step's advantages and α, normalisers of the batch.
    batch = mhpo.prepare_rollout(name, rewards, b.mask, group_size=4, max_length=T)
    ours = mhpo.policy_loss(name, b.logp, b.old_logp, batch.advantages, b.mask, **batch.loss_options())
    (ours_grad,) = torch.autograd.grad(ours.loss, b.logp)
    # TRL: its rewards per function (one function) through the plug-in's step and loss.
    counted = (b.mask.sum(-1) > 0).long()
    rolled = trl_rollout(name, rewards.unsqueeze(-1), torch.ones(1, dtype=torch.float64), counted,
                         num_generations=4, scale_rewards=config.scale_rewards,
                         hysteresis=config.objective_hysteresis, alpha_min=config.objective_alpha_min)  # fmt: skip
    inputs = {"completion_mask": b.mask, "advantages": rolled.advantages, "old_per_token_logps": b.old_logp,
              "num_items_in_batch": b.mask.sum(), "mhpo_num_seqs": counted.sum()}  # fmt: skip
    if rolled.hysteresis is not None:
        inputs["mhpo_alpha"] = rolled.hysteresis
    out = trl_policy_loss(name, b.logp, inputs, hyperparameters=config.objective_hyperparameters,
                          aggregation=config.objective_aggregation, hysteresis=None, alpha_min=None, beta=0.0,
                          max_completion_length=T, training=True, num_processes=1, gradient_accumulation_steps=1,
                          steps_per_generation=1, is_correction=False)  # fmt: skip
    (trl_grad,) = torch.autograd.grad(out.loss, b.logp)
    assert config.scale_rewards == mhpo.get_objective(name).advantage_scale
    torch.testing.assert_close(out.loss, ours.loss, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(trl_grad, ours_grad, rtol=1e-12, atol=1e-15)
    assert ours_grad.abs().max() > 1e-3


HOMOGENEOUS = [n for n in ALL if mhpo.get_objective(n).homogeneous]
NOT_HOMOGENEOUS = [n for n in ALL if not mhpo.get_objective(n).homogeneous]
# enough covariance-selected tokens in a small batch for the selection to matter
DENSE_SELECTION = {"clip_cov": {"clip_cov_ratio": 0.3, "clip_cov_lb": 0.3, "clip_cov_ub": 10.0}, "kl_cov": {"kl_cov_ratio": 0.3}}


def test_the_objectives_that_cannot_fold_alpha_are_marked():
    assert NOT_HOMOGENEOUS == ["clip_cov", "dro", "kl_cov"]


@pytest.mark.parametrize("name", NOT_HOMOGENEOUS)
def test_folding_alpha_is_wrong_for_the_objectives_marked_not_homogeneous(name):
    """The same check as below fails for them, which is why they are marked: DRO's penalty
    does not scale with A, and the covariance selections move when A does."""
    b = make_batch(seed=31, spread=0.9)
    extra = DENSE_SELECTION.get(name, {})
    expected = mhpo.policy_loss(name, *b.inputs(), hysteresis=0.3, **extra)
    folded = torch.where(b.advantages < 0, 0.3 * b.advantages, b.advantages)
    got = mhpo.policy_loss(name, b.logp, b.old_logp, folded, b.mask, hysteresis="off", **extra)
    (expected_grad,) = torch.autograd.grad(expected.loss, b.logp)
    (got_grad,) = torch.autograd.grad(got.loss, b.logp)
    assert (got_grad - expected_grad).abs().max() > 1e-4


@pytest.mark.parametrize("name", HOMOGENEOUS)
def test_folding_alpha_into_the_advantages_is_exact(name):
    """Every policy term is positively homogeneous of degree 1 in A and branches only on A's
    sign, so α·A on the negative advantages with hysteresis off equals hysteresis α: the fold
    verl's estimator relies on. KL and entropy terms are untouched by α either way."""
    b = make_batch(seed=31, spread=0.9)
    extra = dict(ref_logp=b.ref_logp, beta=0.05, entropy=torch.rand_like(b.old_logp), entropy_coef=0.01)
    for alpha in (0.0, 0.3, 1.0):
        expected = mhpo.policy_loss(name, *b.inputs(), hysteresis=alpha, **extra)
        (expected_grad,) = torch.autograd.grad(expected.loss, b.logp)
        folded = torch.where(b.advantages < 0, alpha * b.advantages, b.advantages)
        got = mhpo.policy_loss(name, b.logp, b.old_logp, folded, b.mask, hysteresis="off", **extra)
        (got_grad,) = torch.autograd.grad(got.loss, b.logp)
        torch.testing.assert_close(got.loss, expected.loss, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-12, atol=1e-15)
    for scale in (0.5, 3.0):  # homogeneity itself, on the policy term alone
        base = mhpo.policy_loss(name, *b.inputs(), hysteresis="off", aggregation="token_sum").per_token
        scaled = mhpo.policy_loss(name, b.logp, b.old_logp, scale * b.advantages, b.mask, hysteresis="off",
                                  aggregation="token_sum").per_token  # fmt: skip
        torch.testing.assert_close(scaled, scale * base, rtol=1e-12, atol=1e-15)


def _verl_rollout(rewards, mask, uids):
    from verl import DataProto

    lengths = mask.sum(-1).long()
    token_rewards = torch.zeros_like(mask)
    rows = torch.arange(mask.shape[0])
    token_rewards[rows, (lengths - 1).clamp(min=0)] = rewards  # verl puts the score on the last token
    return DataProto.from_dict(tensors={"token_level_rewards": token_rewards, "response_mask": mask},
                               non_tensors={"uid": np.array(uids, dtype=object)})  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_trainer_and_verl_give_the_same_loss_from_rewards(name):
    """From the same rewards, masks and log-probs: mhpo's trainer path and verl's own
    compute_advantage with the mhpo_<name> estimator (rows of a group not consecutive), then
    the registered policy loss on split micro-batches with verl's global_batch_info, give the
    same loss and gradient in float64."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.trainer.ppo.ray_trainer import compute_advantage

    b = make_batch(batch=8, seed=41, spread=0.5, group_size=4)
    B, T = b.mask.shape
    rewards = torch.tensor([(i * 3) % 4 / 3 for i in range(B)], dtype=torch.float64)
    spec = mhpo.get_objective(name)
    batch = mhpo.prepare_rollout(name, rewards, b.mask, group_size=4, max_length=T)
    off = SELECTION_OFF.get(name, {})  # split into micro-batches below
    ours = mhpo.policy_loss(name, b.logp, b.old_logp, batch.advantages, b.mask, **batch.loss_options(), **off)
    (ours_grad,) = torch.autograd.grad(ours.loss, b.logp)

    perm = torch.tensor([4, 0, 5, 1, 6, 2, 7, 3])  # verl's rows: the two groups interleaved
    uids = ["p1" if int(i) >= 4 else "p0" for i in perm]
    data = compute_advantage(_verl_rollout(rewards[perm], b.mask[perm], uids), adv_estimator=f"mhpo_{name}",
                             config=OmegaConf.create({"norm_adv_by_std_in_grpo": True}))  # fmt: skip
    advantages = data.batch["advantages"]
    logp = b.logp.detach()[perm].requires_grad_(True)
    fn = get_policy_loss_fn(verl_mode(name))
    config = verl_config(verl_mode(name), b)
    config.policy_loss.objective_hyperparameters = off
    loss = 0
    for rows in torch.arange(B).split(3):  # micro-batches of 3, 3 and 2
        part, _ = fn(b.old_logp[perm][rows], logp[rows], advantages[rows], b.mask[perm][rows],
                     loss_agg_mode=OURS_TO_VERL[spec.aggregation], config=config)  # fmt: skip
        loss = loss + part
    (verl_grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(loss, ours.loss, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(verl_grad, ours_grad[perm], rtol=1e-12, atol=1e-15)
    assert ours_grad.abs().max() > 1e-3


def test_verl_estimator_honours_an_explicit_scale_and_refuses_micro_batch_alpha():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.trainer.ppo.ray_trainer import compute_advantage

    b = make_batch(batch=8, seed=42, group_size=4)
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0], dtype=torch.float64)
    data = _verl_rollout(rewards, b.mask, ["a"] * 4 + ["b"] * 4)
    with pytest.warns(UserWarning, match="overrides grpo's advantage scale 'group' with 'none'"):
        out = compute_advantage(data, adv_estimator="mhpo_grpo", config=OmegaConf.create({"norm_adv_by_std_in_grpo": False}))
    expected = mhpo.group_advantages(rewards, 4, scale="none").unsqueeze(-1) * b.mask
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=0, atol=1e-15)
    config = verl_config("a_hpo", b)
    config.policy_loss.objective_hysteresis = "adaptive"
    with pytest.raises(ValueError, match="use algorithm.adv_estimator=mhpo_a_hpo"):
        get_policy_loss_fn("a_hpo")(b.old_logp, b.logp, b.advantages.unsqueeze(-1).expand_as(b.mask), b.mask,
                                    loss_agg_mode="token-mean", config=config)  # fmt: skip
    with pytest.raises(ValueError, match="groups of one size"):
        compute_advantage(_verl_rollout(rewards, b.mask, ["a"] * 3 + ["b"] * 5), adv_estimator="mhpo_grpo",
                          config=OmegaConf.create({}))  # fmt: skip


@pytest.mark.parametrize("name", NOT_HOMOGENEOUS)
def test_verl_estimator_refuses_to_fold_alpha_for_an_objective_not_homogeneous_in_a(name):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.ray_trainer import compute_advantage

    b = make_batch(batch=8, seed=42, group_size=4)
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0], dtype=torch.float64)
    data = _verl_rollout(rewards, b.mask, ["a"] * 4 + ["b"] * 4)
    with pytest.raises(ValueError, match=f"'{name}' is not positively homogeneous in A"):
        compute_advantage(data, adv_estimator=f"mhpo_{name}", config=OmegaConf.create({"objective_hysteresis": 0.5}))
    out = compute_advantage(data, adv_estimator=f"mhpo_{name}", config=OmegaConf.create({}))  # no α: fine
    expected = mhpo.group_advantages(rewards, 4, scale=mhpo.get_objective(name).advantage_scale)
    torch.testing.assert_close(out.batch["advantages"], expected.unsqueeze(-1) * b.mask, rtol=0, atol=1e-15)
