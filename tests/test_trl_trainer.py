"""TRL's GRPOTrainer with mhpo objectives: real runs on a tiny local model, and a two-process
accelerate run whose gradient equals the single-process one."""

import os
import pathlib
import subprocess
import sys
import warnings

import pytest
import torch

import mhpo
from batches import free_port
from trainer_helpers import save_local_hf_model

pytest.importorskip("trl", reason="the TRL integration needs mhpo[trl]")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from mhpo.integrations.trl import ObjectiveGRPOConfig, ObjectiveGRPOTrainer  # noqa: E402

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    return save_local_hf_model(tmp_path_factory.mktemp("hf") / "model")


def digit_reward(completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


@pytest.mark.parametrize("objective", mhpo.list_objectives())
def test_grpo_trainer_runs_each_objective(objective, local_model, tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(local_model)
    tokenizer = AutoTokenizer.from_pretrained(local_model)
    before = [p.detach().clone() for p in model.parameters()]
    # DAPO's recipe masks truncated completions, and a random model truncates all of them at
    # 6 tokens: nothing would train. Turning the filter off is the user's choice, and warned about.
    extra = {"mask_truncated_completions": False} if objective == "dapo" else {}
    args = ObjectiveGRPOConfig(
        output_dir=str(tmp_path), objective=objective, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=6, max_steps=3, learning_rate=5e-3, num_iterations=2, logging_steps=1,
        use_cpu=True, report_to="none", save_strategy="no", seed=0, temperature=1.0, **extra,
    )  # fmt: skip
    data = Dataset.from_dict({"prompt": [f"{i}+{i}=" for i in range(16)]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = ObjectiveGRPOTrainer(model=model, reward_funcs=digit_reward, args=args, train_dataset=data,
                                       processing_class=tokenizer)  # fmt: skip
    notes = [str(w.message) for w in caught]
    if objective == "dapo":
        assert any("overrides dapo's overlong filter" in n for n in notes)
        assert any("TRL cannot run dapo's dynamic sampling" in n for n in notes)
        assert any("no soft overlong punishment" in n for n in notes)
    else:
        assert not any(objective in n and "overrides" in n for n in notes)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    keys = set().union(*logs)
    assert {"objective/ratio/max", "objective/grad_weight/mean", "entropy", "reward"} <= keys
    if objective == "mhpo":
        assert "objective/mhpo/survival" in keys
    if objective == "a_hpo":
        assert "objective/hpo/alpha" in keys


@pytest.mark.parametrize("objective", ["mhpo", "dapo", "a_hpo"])
def test_two_process_gradient_equals_single_process(objective, tmp_path):
    """Two CPU processes (gloo, DDP through accelerate) on halves of a fixed batch.

    `accelerate launch --cpu --num_processes 2` starts a single process in accelerate 1.x
    unless an MPI hostfile is given, so the processes are started with torchrun, whose
    environment accelerate picks up (ACCELERATE_USE_CPU selects its multi-CPU mode)."""
    env = dict(os.environ, PYTHONPATH=str(HERE), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    single = tmp_path / "single.pt"
    one = subprocess.run([sys.executable, str(HERE / "trl_worker.py"), str(single), objective], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    double = tmp_path / "double.pt"
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), str(HERE / "trl_worker.py"), str(double), objective],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert "process 1/2 DistributedType.MULTI_CPU" in two.stderr and "DistributedDataParallel" in two.stderr
    g1, g2 = torch.load(single), torch.load(double)
    scale = g1.abs().max()
    assert scale > 1e-4
    # The model is float64, but TRL scores tokens through transformers' fused LM head, which
    # works in float32: batch halves round differently at ~1e-8 of the gradient's scale. A
    # normalisation error (a factor of 2 from DDP averaging, a wrong token count) is far larger.
    assert (g2 - g1).abs().max() <= 1e-6 * scale, ((g2 - g1).abs().max().item(), scale.item())


@pytest.mark.parametrize("objective", ["dr_grpo", "a_hpo", "grpo", "gpg"])
def test_trl_advantages_are_the_objectives_from_its_rewards(objective, local_model, tmp_path):
    """What TRL trains on, from the rewards it scored: Dr. GRPO's unscaled advantages (TRL's
    default scale_rewards='group' used to apply), and A-HPO's α over the generation batch."""
    torch.manual_seed(0)
    scored, outputs = [], []

    def reward(completions, **kwargs):
        values = digit_reward(completions)
        scored.append(values)
        return values

    class Recording(ObjectiveGRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            outputs.append(super()._generate_and_score_completions(inputs))
            return outputs[-1]

    args = ObjectiveGRPOConfig(
        output_dir=str(tmp_path), objective=objective, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=6, max_steps=1, learning_rate=5e-3, num_iterations=1, logging_steps=1,
        use_cpu=True, report_to="none", save_strategy="no", seed=0, temperature=1.0,
    )  # fmt: skip
    data = Dataset.from_dict({"prompt": [f"{i}+{i}=" for i in range(16)]})
    trainer = Recording(model=AutoModelForCausalLM.from_pretrained(local_model), reward_funcs=reward, args=args,
                        train_dataset=data, processing_class=AutoTokenizer.from_pretrained(local_model))  # fmt: skip
    trainer.train()
    rewards = torch.tensor(scored[0], dtype=torch.float64)
    assert rewards.std() > 0  # the rewards vary, so the scale matters
    spec = mhpo.get_objective(objective)
    expected = mhpo.group_advantages(rewards, 4, scale=spec.advantage_scale)
    got = outputs[0]["advantages"].double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)  # TRL keeps advantages in float32
    if objective == "a_hpo":
        counted = (outputs[0]["completion_mask"].sum(-1) > 0).double().unsqueeze(-1)
        alpha = mhpo.adaptive_alpha(expected, 0.1, mask=counted)
        torch.testing.assert_close(outputs[0]["mhpo_alpha"].double(), alpha, rtol=1e-6, atol=1e-7)
