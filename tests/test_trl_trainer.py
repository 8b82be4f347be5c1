"""TRL's GRPOTrainer with mhpo objectives: real runs on a tiny local model, and a two-process
accelerate run whose gradient equals the single-process one."""

import os
import pathlib
import subprocess
import sys

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
    args = ObjectiveGRPOConfig(
        output_dir=str(tmp_path), objective=objective, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=6, max_steps=3, learning_rate=5e-3, num_iterations=2, logging_steps=1,
        use_cpu=True, report_to="none", save_strategy="no", seed=0, temperature=1.0,
    )  # fmt: skip
    data = Dataset.from_dict({"prompt": [f"{i}+{i}=" for i in range(16)]})
    trainer = ObjectiveGRPOTrainer(model=model, reward_funcs=digit_reward, args=args, train_dataset=data,
                                   processing_class=tokenizer)  # fmt: skip
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
