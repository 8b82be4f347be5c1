"""No silent wrong results from the trainer and the study tools: a run is its whole
configuration, bad options and files fail before any work, and nothing a user has is lost."""

import errno
import subprocess
import sys
import threading

import pytest
import torch
import yaml

from mhpo.cli import main
from mhpo.study.compare import compare
from mhpo.study.report import build_report
from mhpo.study.runs import find_runs
from mhpo.train import checkpoint
from mhpo.train.config import TrainConfig
from mhpo.train.runlog import read_metrics
from mhpo.train.trainer import Trainer
from trainer_helpers import TINY, tiny_config

QUIET = dict(log=lambda *a: None)


def _train(path, **overrides):
    return Trainer(tiny_config(path, **{"steps": 1, **overrides}), **QUIET).train()


# ---- 1. a report never merges runs that differ ---------------------------------------------


def test_report_keeps_an_lr_sweep_apart(tmp_path):
    _train(tmp_path / "a", lr=1e-4, objective="grpo")
    _train(tmp_path / "b", lr=1e-3, objective="grpo")
    runs = find_runs([tmp_path / "a", tmp_path / "b"])
    assert sorted(r.label for r in runs) == ["grpo (lr=0.0001)", "grpo (lr=0.001)"]
    text = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "report").read_text()
    assert "2 runs: 2 configurations" in text and "differ in `lr`" in text
    assert "| `grpo (lr=0.0001)` | 1 |" in text and "| `grpo (lr=0.001)` | 1 |" in text


def test_a_sweep_report_rebuilds_from_its_csv(tmp_path, capsys):
    """A learning-rate sweep's table and plot come out the same from the runs and from the compact
    CSV, whose labels carry the rate; a CSV whose labels do not is refused with the reason."""
    for lr in (1e-4, 1e-3):
        for seed in (0, 1):
            _train(tmp_path / f"lr{lr:g}-s{seed}", lr=lr, seed=seed, objective="grpo", eval_every=1, eval_size=8)
    runs = sorted(tmp_path.glob("lr*"))
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "direct"), "--sweep", "lr",
                 "--csv", str(tmp_path / "runs.csv")]) == 0  # fmt: skip
    assert main(["report", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "fromcsv"), "--sweep", "lr"]) == 0
    section = [(tmp_path / d / "report.md").read_text().split("## Where each objective breaks: lr")[1].split("## Plots")[0]
               for d in ("direct", "fromcsv")]  # fmt: skip
    assert section[0] == section[1]
    assert "| `grpo` |" in section[0] and "lr = 0.0001 | lr = 0.001 |" in section[0]
    assert (tmp_path / "fromcsv" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # One rate only: the labels say nothing about lr, and the sweep cannot be placed.
    assert main(["report", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "one"), "--csv", str(tmp_path / "one.csv")]) == 0
    with pytest.raises(SystemExit, match="does not say its lr"):
        main(["report", str(tmp_path / "one.csv"), "--out", str(tmp_path / "bad"), "--sweep", "lr"])


def test_report_refuses_the_same_configuration_twice(tmp_path):
    _train(tmp_path / "a")
    _train(tmp_path / "b")
    with pytest.raises(ValueError, match="the same configuration twice"):
        find_runs([tmp_path / "a", tmp_path / "b"])


# ---- 2. resuming or re-running with another configuration --------------------------------------


def test_resume_refuses_another_configuration_and_names_each_option(tmp_path):
    _train(tmp_path, objective="mhpo", steps=2, checkpoint_every=1)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    changed = tiny_config(tmp_path, objective="grpo", batch_size=16, lr=5e-3, steps=4, resume=True)
    with pytest.raises(ValueError) as error:
        Trainer(changed, **QUIET)
    message = str(error.value)
    for expected in ("objective: saved 'mhpo', now 'grpo'", "batch_size: saved 8, now 16", "lr: saved 0.001, now 0.005"):
        assert expected in message
    assert "steps" not in message.split("Differences:")[1]  # more steps is allowed
    assert (tmp_path / "run" / "config.yaml").read_text() == saved


def test_resume_may_extend_a_run_and_records_the_new_length(tmp_path):
    _train(tmp_path, steps=2, checkpoint_every=1)
    Trainer(tiny_config(tmp_path, steps=3, resume=True, eval_every=1), **QUIET).train()
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r] == [1, 2, 3]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["steps"] == 3
    with pytest.raises(ValueError, match="already run 3 steps"):
        Trainer(tiny_config(tmp_path, steps=2, resume=True), **QUIET)


def test_compare_refuses_to_reuse_runs_made_with_other_options(tmp_path):
    base = TrainConfig(**{**TINY, "steps": 1, "cache_dir": str(tmp_path / "cache"), "warmstart_steps": 0})
    compare(base, ["grpo"], seeds=1, out=tmp_path / "study", jobs=1, **QUIET)
    other = TrainConfig(**{**TINY, "steps": 1, "cache_dir": str(tmp_path / "cache"), "warmstart_steps": 0,
                           "task": "arithmetic", "lr": 5e-3})  # fmt: skip
    before = read_metrics(tmp_path / "study" / "runs" / "grpo-seed0" / "metrics.jsonl")
    with pytest.raises(ValueError) as error:
        compare(other, ["grpo"], seeds=1, out=tmp_path / "study", jobs=1, **QUIET)
    assert "task: saved 'countdown', now 'arithmetic'" in str(error.value) and "lr: saved" in str(error.value)
    assert read_metrics(tmp_path / "study" / "runs" / "grpo-seed0" / "metrics.jsonl") == before


# ---- 3. numeric options are validated before any work ------------------------------------------

# A run that would take a second if a bad option were accepted.
# RUN for any model (--model), SMALL for the tiny one at its smallest shape.
RUN = ["--warmstart-steps", "0", "--steps", "1", "--batch-size", "8", "--group-size", "4", "--max-new-tokens", "4",
       "--eval-size", "2", "--eval-k", "1", "--no-progress", "--cache-dir", "/nonexistent-cache-not-written"]  # fmt: skip
SMALL = [*RUN, "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--intermediate-size", "64"]

BAD_FLAGS = [
    (["--max-grad-norm", "-1"], "--max-grad-norm must be a number > 0, or inf"),
    (["--max-grad-norm", "0"], "--max-grad-norm must be a number > 0"),
    (["--max-grad-norm", "nan"], "--max-grad-norm must be a number > 0"),
    (["--lr", "inf"], "--lr must be a finite number > 0"),
    (["--threads", "-1"], "--threads must be an integer >= 0"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be an integer >= 0"),
    (["--eval-every", "-1"], "--eval-every must be an integer >= 0"),
    (["--dynamic-sampling-rounds", "0"], "--dynamic-sampling-rounds must be an integer >= 1"),
    (["--dtype", "float16"], "dtype must be one of auto, float32, bfloat16"),
    (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
    (["--objective", "grpo", "--alpha-min", "0.3"], "--alpha-min only applies with adaptive hysteresis"),
    (["--top-p", "0"], "--top-p must be in \\(0, 1\\]"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_numbers_are_refused_before_any_work(flags, message, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=message):
        main(["train", "--output-dir", str(out), *SMALL, *flags])
    assert not out.exists()


def test_no_clipping_is_infinity_and_accepted(tmp_path):
    from test_trainer import _OnesTask

    records = Trainer(tiny_config(tmp_path, steps=2, max_grad_norm=float("inf")), task=_OnesTask(), **QUIET).train()
    assert all(0 < r["grad_norm/max"] < float("inf") for r in records[1:])


# ---- 5. YAML values are coerced and checked ----------------------------------------------------


def test_yaml_values_take_their_fields_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('lr: 3e-4\ntensorboard: "false"\nsteps: "3"\nhysteresis: 0.5\nmax_grad_norm: .inf\n')
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.lr, cfg.tensorboard, cfg.steps, cfg.hysteresis, cfg.max_grad_norm) == (3e-4, False, 3, "0.5", float("inf"))
    for text, message in [("lr: fast\n", "option 'lr' must be a number"), ("steps: 2.5\n", "option 'steps' must be an integer"),
                          ("tensorboard: maybe\n", "option 'tensorboard' must be true or false"),
                          ("hp: [1]\n", "option 'hp' must be a mapping"), ("steps: null\n", "option 'steps' cannot be empty")]:  # fmt: skip
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_yaml(path)


def test_missing_or_malformed_yaml_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="config file .*nope.yaml does not exist"):
        main(["train", "--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1e-3\nsteps: 3\n")
    with pytest.raises(SystemExit, match="is not valid YAML at line"):
        main(["train", "--config", str(bad)])


# ---- 7. one process per run directory ------------------------------------------------------------


def test_a_second_process_on_a_run_directory_fails_at_once(tmp_path):
    from mhpo.train.rundir import RunDirectory

    holder = RunDirectory(tmp_path / "run")  # another process's lock (a separate open file)
    try:
        with pytest.raises(ValueError, match="in use by another mhpo process"):
            Trainer(tiny_config(tmp_path, steps=1), **QUIET)
        assert read_metrics(tmp_path / "run" / "metrics.jsonl") == []
    finally:
        holder.release()
    _train(tmp_path)  # free again once released


def test_lock_is_held_across_processes(tmp_path):
    from mhpo.train.rundir import RunDirectory

    holder = RunDirectory(tmp_path / "run")
    try:
        code = "from mhpo.train.rundir import RunDirectory; RunDirectory(__import__('sys').argv[1])"
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
        assert result.returncode != 0 and "in use by another mhpo process" in result.stderr
    finally:
        holder.release()


# ---- 8-10. checkpoints, disk space and writability ------------------------------------------------


def test_resume_refuses_when_no_checkpoint_is_readable_and_keeps_the_log(tmp_path):
    _train(tmp_path, steps=3, checkpoint_every=1)
    log = (tmp_path / "run" / "metrics.jsonl").read_text()
    for path in (tmp_path / "run" / "checkpoints").glob("step-*.pt"):
        path.write_bytes(b"damaged")
    with pytest.raises(ValueError, match="no checkpoint .* can be read"):
        Trainer(tiny_config(tmp_path, steps=5, resume=True), **QUIET)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == log
    assert len(list((tmp_path / "run" / "checkpoints").glob("step-*.pt"))) == 2


def test_retention_keeps_what_was_written_not_what_looks_newest(tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "step-000080.pt").write_bytes(b"damaged, from an abandoned timeline")
    for step in (10, 20, 30):
        checkpoint.save_checkpoint(directory, step, {"step": step})
    names = sorted(p.name for p in directory.glob("step-*.pt"))
    assert names == ["step-000020.pt", "step-000030.pt", "step-000080.pt"]
    assert checkpoint.load_latest(directory, log=lambda m: None)["step"] == 30  # the damaged one is skipped


def test_a_full_disk_leaves_no_temporary_and_says_how_much_is_needed(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    state = {"weights": torch.zeros(1000, 1000)}

    def full_disk(obj, handle):
        handle.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(ValueError, match="not enough disk space .* needs about 5 MiB"):
        checkpoint.save_checkpoint(directory, 1, state)
    assert list(directory.iterdir()) == []


def test_stale_temporaries_are_removed_before_writing(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    stale = directory / ".step-000001.pt.tmp-999999"
    stale.write_bytes(b"partial")
    real_save = torch.save

    def save(obj, handle):
        assert not stale.exists()  # the space it held is free before the new write
        real_save(obj, handle)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    checkpoint.save_checkpoint(directory, 2, {"step": 2})
    assert sorted(p.name for p in directory.iterdir()) == ["step-000002.pt"]


def test_too_little_free_space_fails_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: type("U", (), {"free": 3 * 2**20})())
    with pytest.raises(ValueError, match="needs about 5 MiB and 3 MiB are free"):
        checkpoint.save_checkpoint(tmp_path / "ckpt", 1, {"weights": torch.zeros(1000, 1000)})
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_an_unwritable_output_directory_fails_before_the_warm_start(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setattr("mhpo.train.build.warm_start", lambda *a, **k: pytest.fail("warm start ran"))
    with pytest.raises(ValueError, match="cannot create the output directory"):
        Trainer(tiny_config(tmp_path, output_dir=str(tmp_path / "file" / "run"), warmstart_steps=5), **QUIET)


def test_a_fresh_start_refuses_a_directory_with_an_earlier_log(tmp_path):
    _train(tmp_path, checkpoint_every=0, steps=1)
    for path in (tmp_path / "run" / "checkpoints").glob("*"):
        path.unlink()  # a run that never wrote a checkpoint still has its log
    log = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="holds an earlier run; pass --resume"):
        Trainer(tiny_config(tmp_path), **QUIET)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == log
    # --resume with nothing to resume from starts again and keeps the old log beside the new one.
    Trainer(tiny_config(tmp_path, resume=True), **QUIET).train()
    kept = list((tmp_path / "run").glob("metrics.jsonl.before-restart-*"))
    assert len(kept) == 1 and kept[0].read_text() == log


# ---- 11. clear errors instead of tracebacks ----------------------------------------------------


def _one_line_error(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("mhpo train: ") and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    "setup, flags, message",
    [
        (None, ["--data-path", "{tmp}/missing.jsonl"], "data file .*missing.jsonl does not exist"),
        ('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer"\n', ["--data-path", "{tmp}/d.jsonl"], "d.jsonl:2: not a JSON object"),
        ("", ["--data-path", "{tmp}/d.jsonl"], "holds no rows"),
        ("prompt\tanswer\n", ["--data-path", "{tmp}/d.tsv"], "unsupported file type '.tsv'"),
        ('{"prompt": "a", "answer": "1"}\n{"prompt": "b"}\n', ["--data-path", "{tmp}/d.jsonl"], "row 2 has no field 'answer'"),
        ('{"prompt": "a", "answer": null}\n{"prompt": "b", "answer": "2"}\n', ["--data-path", "{tmp}/d.jsonl"],
         "row 1: field 'answer' is empty"),
        (None, ["--model", "{tmp}/no-such-model", "--task", "arithmetic"], "no such directory"),
    ],
)  # fmt: skip
def test_bad_inputs_are_one_line_before_any_work(setup, flags, message, tmp_path):
    if setup is not None:
        name = next(f for f in flags if f.startswith("{tmp}/")).split("/", 1)[1]
        (tmp_path / name).write_text(setup)
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    task = [] if "--task" in flags else ["--task", "userdata"]
    out = tmp_path / "out"
    argv = ["train", *task, *flags, "--output-dir", str(out), *(RUN if "--model" in flags else SMALL)]
    assert __import__("re").search(message, _one_line_error(argv))
    assert not out.exists()


def test_a_hub_id_offline_fails_at_once(tmp_path, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    message = _one_line_error(["train", "--model", "someorg/somemodel", "--output-dir", str(tmp_path / "out"), *RUN])
    assert "hub is offline" in message and time.perf_counter() - start < 10
    assert not (tmp_path / "out").exists()


def test_a_hub_id_without_network_fails_at_once(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    message = _one_line_error(["train", "--model", "someorg/somemodel", "--output-dir", str(tmp_path / "out"), *RUN])
    assert "cannot be reached" in message


def test_train_exits_1_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mhpo.cli", "train", "--max-grad-norm", "-1", "--output-dir",
                             str(tmp_path / "out"), *SMALL], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("mhpo train: invalid training configuration") and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_scoring_in_a_worker_thread_still_verifies(tmp_path):
    from mhpo.tasks.userdata import math_verify_reward

    results = {}
    thread = threading.Thread(target=lambda: results.update(
        right=math_verify_reward("<answer>33</answer>", "33"), wrong=math_verify_reward("<answer>34</answer>", "33")))  # fmt: skip
    thread.start()
    thread.join()
    assert results == {"right": 1.0, "wrong": 0.0}


# ---- gradient clipping made visible, and the step-0 evaluation computed once ----------------------


def test_clipped_fraction_and_relative_clipping(tmp_path):
    from test_trainer import _OnesTask

    common = dict(steps=4, lr=3e-3, minibatches=2, mu=2, max_grad_norm=1e-6)
    tight = Trainer(tiny_config(tmp_path / "a", **common), task=_OnesTask(), **QUIET).train()
    assert all(r["grad_norm/clipped_frac"] == 1.0 for r in tight[1:])  # every step's norm exceeds 1e-6
    free = Trainer(tiny_config(tmp_path / "b", **{**common, "max_grad_norm": float("inf")}), task=_OnesTask(), **QUIET).train()
    assert all(r["grad_norm/clipped_frac"] == 0.0 for r in free[1:])
    # Relative: after 10 optimizer steps (4 per RL step here), clip at 0.5x the median of the earlier norms.
    relative = Trainer(tiny_config(tmp_path / "c", **{**common, "max_grad_norm": float("inf"), "relative_clip": 0.5}),
                       task=_OnesTask(), **QUIET).train()  # fmt: skip
    assert relative[1]["grad_norm/clipped_frac"] == 0.0 and relative[2]["grad_norm/clipped_frac"] == 0.0
    assert relative[3]["grad_norm/clipped_frac"] > 0 and relative[3]["grad_norm/threshold"] < float("inf")


def test_relative_clipping_resumes_as_an_uninterrupted_run(tmp_path):
    from test_trainer import VOLATILE, _OnesTask

    common = dict(steps=5, relative_clip=1.0, max_grad_norm=float("inf"), checkpoint_every=1, eval_every=0)
    Trainer(tiny_config(tmp_path / "a", **common), task=_OnesTask(), **QUIET).train()
    Trainer(tiny_config(tmp_path / "b", **{**common, "steps": 3}), task=_OnesTask(), **QUIET).train()
    Trainer(tiny_config(tmp_path / "b", **common, resume=True), task=_OnesTask(), **QUIET).train()
    # The 3-step run's evaluation at its last step stays in the extended log; compare the training.
    skip = (*VOLATILE, "eval/")
    stable = lambda path: [{k: v for k, v in r.items() if not k.startswith(skip)} for r in read_metrics(path)]  # noqa: E731
    assert stable(tmp_path / "b" / "run" / "metrics.jsonl") == stable(tmp_path / "a" / "run" / "metrics.jsonl")
    assert any(r.get("grad_norm/clipped_frac") for r in read_metrics(tmp_path / "a" / "run" / "metrics.jsonl"))


def test_step_zero_evaluation_is_computed_once_per_warm_start(tmp_path, monkeypatch):
    from test_trainer import VOLATILE

    cache = str(tmp_path / "cache")
    first = Trainer(tiny_config(tmp_path / "a", warmstart_steps=5, cache_dir=cache, steps=2, eval_every=1), **QUIET)
    first.train()
    assert len(list((tmp_path / "cache").glob("eval0-*.json"))) == 1
    calls = []
    real = Trainer._evaluate
    monkeypatch.setattr(Trainer, "_evaluate", lambda self: calls.append(self.step) or real(self))
    second = Trainer(tiny_config(tmp_path / "b", warmstart_steps=5, cache_dir=cache, steps=2, eval_every=1,
                                 objective="grpo"), **QUIET)  # fmt: skip
    second.train()
    assert calls == [1, 2]  # step 0 came from the cache
    same_objective = Trainer(tiny_config(tmp_path / "c", warmstart_steps=5, cache_dir=cache, steps=2, eval_every=1), **QUIET)
    same_objective.train()
    stable = lambda path: [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in read_metrics(path)]  # noqa: E731
    # Skipping the evaluation changes nothing else: the run equals the one that computed it.
    assert stable(tmp_path / "c" / "run" / "metrics.jsonl") == stable(tmp_path / "a" / "run" / "metrics.jsonl")
    other_seed = Trainer(tiny_config(tmp_path / "d", warmstart_steps=5, cache_dir=cache, steps=1, seed=1), **QUIET)
    other_seed.train()
    assert len(list((tmp_path / "cache").glob("eval0-*.json"))) == 2  # avg@k samples with the seed


def test_step_zero_evaluation_is_computed_once_per_starting_weights(tmp_path, monkeypatch):
    """Without a warm start (a pretrained model, as SmolLM2's comparisons run), the objectives of
    one seed start from the same weights: step 0 is evaluated once, keyed by those weights."""
    from test_trainer import VOLATILE

    from mhpo.train.build import model_config
    from mhpo.train.models import load_policy

    cache = str(tmp_path / "cache")
    config = lambda name, **kw: tiny_config(tmp_path / name, cache_dir=cache, steps=2, eval_every=1, **kw)  # noqa: E731
    Trainer(config("a"), **QUIET).train()
    assert len(list((tmp_path / "cache" / "eval0").glob("eval0-*.json"))) == 1
    calls = []
    real = Trainer._evaluate
    monkeypatch.setattr(Trainer, "_evaluate", lambda self: calls.append(self.step) or real(self))
    Trainer(config("b", objective="grpo"), **QUIET).train()
    assert calls == [1, 2]  # step 0 came from the cache
    Trainer(config("c"), **QUIET).train()  # the first run's configuration again, step 0 from the cache
    stable = lambda path: [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in read_metrics(path)]  # noqa: E731
    assert stable(tmp_path / "c" / "run" / "metrics.jsonl") == stable(tmp_path / "a" / "run" / "metrics.jsonl")
    # Other starting weights (one parameter moved) are evaluated, not taken from the cache.
    calls.clear()
    policy = load_policy(model_config(config("d")), seed=0)
    with torch.no_grad():
        next(policy.model.parameters()).add_(1e-3)
    Trainer(config("d"), policy=policy, **QUIET).train()
    assert calls == [0, 1, 2]
    assert len(list((tmp_path / "cache" / "eval0").glob("eval0-*.json"))) == 2
