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


def _mhpo(*argv, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "mhpo.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)  # fmt: skip


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
