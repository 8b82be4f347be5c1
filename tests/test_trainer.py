"""The trainer end to end on a tiny in-process model: every objective, learning, resume,
crash safety and configuration errors."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import mhpo
from mhpo.tasks.base import Problem
from mhpo.train.config import TrainConfig
from mhpo.train.runlog import read_metrics
from mhpo.train.collect import overlong_penalty
from mhpo.train.trainer import Trainer
from trainer_helpers import tiny_config


def _params(trainer):
    return [p.detach().clone() for p in trainer.policy.model.parameters()]


@pytest.mark.parametrize("objective", mhpo.list_objectives())
def test_every_objective_trains(objective, tmp_path):
    # 24 tokens, so that some completions of a random policy end with EOS: DAPO's overlong
    # filter masks every completion that hits the budget, and with none left nothing trains.
    cfg = tiny_config(tmp_path, objective=objective, steps=2, task="arithmetic", num_operands=2, max_operand=3,
                      max_new_tokens=24)  # fmt: skip
    trainer = Trainer(cfg, task=_OnesTask(), log=lambda *a: None)
    before = _params(trainer)
    records = trainer.train()
    steps = [r for r in records if r["step"] >= 1]
    assert len(steps) == 2
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(trainer)))
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in logged] == [0, 1, 2]
    assert {"ratio/max", "grad_norm/max", "entropy/mean", "reward/mean", "eval/accuracy"} <= set().union(*logged)


class _OnesTask:
    """Reward = share of digit characters in a 6-token completion: about 0.1 for a random
    policy (10 of 99 tokens), with variance in every group, and learnable in a few dozen steps."""

    name = "digits"

    def problems(self, split, count, seed):
        return [Problem(prompt=f"{i % 10}>", instruction="", answer="") for i in range(count)]

    def score(self, completion, problem):
        return sum(ch.isdigit() for ch in completion) / 6

    def demonstration(self, problem):
        return None


def test_reward_rises_on_a_trivially_learnable_task(tmp_path):
    cfg = tiny_config(tmp_path, objective="grpo", steps=30, lr=3e-3, batch_size=32, group_size=8,
                      micro_batch_size=32, minibatches=1, mu=1)  # fmt: skip
    records = [r for r in Trainer(cfg, task=_OnesTask(), log=lambda *a: None).train() if r["step"] >= 1]
    first = sum(r["reward/mean"] for r in records[:5]) / 5
    last = sum(r["reward/mean"] for r in records[-5:]) / 5
    assert last > first + 0.15, (first, last)


VOLATILE = ("time/", "tokens/")


def _stable(records):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in records]


def test_resume_equals_uninterrupted(tmp_path):
    common = dict(objective="a_hpo", steps=4, checkpoint_every=2, eval_every=2, task="countdown")
    straight = tiny_config(tmp_path / "a", **common)
    Trainer(straight, log=lambda *a: None).train()
    expected = read_metrics(tmp_path / "a" / "run" / "metrics.jsonl")

    first = tiny_config(tmp_path / "b", **{**common, "steps": 2})
    Trainer(first, log=lambda *a: None).train()
    resumed = tiny_config(tmp_path / "b", **common, resume=True)
    Trainer(resumed, log=lambda *a: None).train()
    got = read_metrics(tmp_path / "b" / "run" / "metrics.jsonl")
    assert [r["step"] for r in got] == [0, 1, 2, 3, 4]
    assert _stable(got) == _stable(expected)


def test_sigkill_then_resume(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "mhpo.cli", "train", "--task", "countdown", "--objective", "mhpo",
            "--steps", "400", "--checkpoint-every", "1", "--output-dir", str(out), "--cache-dir", str(tmp_path / "c"),
            "--warmstart-steps", "0", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
            "--intermediate-size", "64", "--batch-size", "8", "--group-size", "4", "--max-new-tokens", "6",
            "--eval-size", "4", "--eval-k", "1", "--eval-every", "0", "--no-progress", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "checkpoints").glob("step-*.pt"))) < 1:
        time.sleep(0.2)
    time.sleep(0.7)  # land somewhere inside a later step or checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = read_metrics(out / "metrics.jsonl")
    assert before and before[-1]["step"] >= 1
    # Resume and finish a few more steps.
    done_at = before[-1]["step"] + 3
    args[args.index("--steps") + 1] = str(done_at)
    result = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    after = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in after] == list(range(0, done_at + 1))
    assert not list((out / "checkpoints").glob(".*tmp*"))
    assert (out / "done").exists()


def test_half_written_checkpoint_is_never_loaded(tmp_path):
    cfg = tiny_config(tmp_path, steps=2, checkpoint_every=1)
    Trainer(cfg, log=lambda *a: None).train()
    ckpt = tmp_path / "run" / "checkpoints"
    (ckpt / ".step-000003.pt.tmp-999").write_bytes(b"garbage")  # a crash mid-write leaves this
    (ckpt / "step-000004.pt").write_bytes(b"truncated")  # and a damaged file falls back
    resumed = Trainer(tiny_config(tmp_path, steps=3, checkpoint_every=1, resume=True), log=lambda *a: None)
    assert resumed.step == 2


def test_a_fresh_start_never_overwrites_an_earlier_runs_checkpoints(tmp_path):
    Trainer(tiny_config(tmp_path, steps=1, checkpoint_every=1), log=lambda *a: None).train()
    with pytest.raises(ValueError, match="pass --resume"):
        Trainer(tiny_config(tmp_path, steps=2), log=lambda *a: None)
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == 2


def test_metrics_log_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "x": 1.0}) + "\n" + '{"step": 2, "x"')
    assert read_metrics(path) == [{"step": 1, "x": 1.0}]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"group_size": 1, "batch_size": 8}, "group_size must be >= 2"),
        ({"objective": "mhp"}, "Unknown objective 'mhp'"),
        ({"mu": 0}, "mu must be >= 1"),
        ({"batch_size": 10, "group_size": 4}, "not a multiple of group_size"),
        ({"hp": {"c": -1}}, "c must be a finite number > 0"),
        ({"hp": {"epsilon": 0.2}, "objective": "grpo"}, "no hyperparameter 'epsilon'"),
        ({"task": "userdata"}, "needs --data-path"),
        ({"hysteresis": "2"}, "hysteresis must be in"),
    ],
)
def test_invalid_configs_fail_before_any_work(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_config(tmp_path, **overrides), log=lambda *a: None)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_missing_dataset_field_fails_before_any_work(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "1+1", "a": "2"}\n{"q": "2+2", "a": "4"}\n')
    with pytest.raises(ValueError, match="no field"):
        Trainer(tiny_config(tmp_path, task="userdata", data_path=str(data)), log=lambda *a: None)


def test_unknown_yaml_option_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective: mhpo\nbatch_sise: 8\n")
    with pytest.raises(ValueError, match="unknown training option 'batch_sise'. Did you mean 'batch_size'"):
        TrainConfig.from_yaml(path)


def test_warm_start_only_for_the_tiny_model_unless_asked():
    from mhpo.train.config import config_from_args
    from mhpo.cli import build_parser

    assert TrainConfig().warmstart_steps_value() == 120
    assert TrainConfig(model="smollm2-135m").warmstart_steps_value() == 0
    assert TrainConfig(model="/models/qwen", warmstart_steps=30).warmstart_steps_value() == 30
    args = build_parser().parse_args(["train", "--model", "smollm2-135m", "--warmstart-steps", "7"])
    assert config_from_args(args, None).warmstart_steps_value() == 7


def test_overlong_penalty_matches_dapo():
    # L_max = 16, L_c = 4: free up to 12, linear to −1 at 16... −1 beyond
    assert [overlong_penalty(n, 16, 4) for n in (10, 12, 13, 16, 17)] == [0.0, 0.0, -0.25, -1.0, -1.0]


def test_dapo_preset_enables_dynamic_sampling_and_overlong_shaping(tmp_path):
    cfg = tiny_config(tmp_path, objective="dapo", max_new_tokens=16)
    assert cfg.preset("dynamic_sampling") and cfg.preset("overlong_filter") and cfg.preset("overlong_buffer") == 4
    assert tiny_config(tmp_path, objective="dapo", max_new_tokens=40).preset("overlong_buffer") == 10  # a quarter
    plain = tiny_config(tmp_path, objective="grpo")
    assert not plain.preset("dynamic_sampling") and not plain.preset("overlong_filter") and plain.preset("overlong_buffer") == 0
    explicit = tiny_config(tmp_path, objective="dapo", dynamic_sampling=False)
    assert explicit.preset("dynamic_sampling") is False
    records = Trainer(tiny_config(tmp_path, objective="dapo", steps=2, max_new_tokens=8), task=_OnesTask(),
                      log=lambda *a: None).train()  # fmt: skip
    assert all(r["sampling/rounds"] >= 1 for r in records if r["step"] >= 1)


def test_kl_reference_and_entropy_bonus_run(tmp_path):
    cfg = tiny_config(tmp_path, objective="grpo", steps=2, beta=0.1, entropy_coef=0.01)
    records = Trainer(cfg, task=_OnesTask(), log=lambda *a: None).train()
    assert "kl/k3" in records[-1] and torch.isfinite(torch.tensor(records[-1]["loss"]))


def test_tensorboard_mirror(tmp_path):
    Trainer(tiny_config(tmp_path, steps=1, tensorboard=True), log=lambda *a: None).train()
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100
