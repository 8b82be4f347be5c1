"""What training a real model needs: device placement, LoRA with the base model as the KL
reference, export to a Hugging Face directory, system prompts, several reward functions and
trackers. Everything runs on CPU; the CUDA test is skipped where there is no GPU."""

import json
import math

import pytest
import torch
from trainer_helpers import greedy_reference, save_local_hf_model, tiny_config

from mhpo.cli import main
from mhpo.train.checkpoint import list_checkpoints
from mhpo.train.models import HFTokenizer, LoraSettings, ModelConfig, load_policy
from mhpo.train.rollout import generate
from mhpo.train.runlog import read_metrics
from mhpo.train.collect import Collected
from mhpo.train.prepare import completion_logprobs, pack_batch, reference_logprobs
from mhpo.train.trainer import Trainer

QUIET = dict(log=lambda *a: None)
CHAT = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}[assistant]"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _chat_model(tmp_path) -> str:
    """A local Hugging Face model directory whose tokenizer has a chat template."""
    from transformers import AutoTokenizer

    directory = save_local_hf_model(tmp_path / "hf-model")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = CHAT
    tokenizer.save_pretrained(directory)
    return directory


# ---- device -------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [0, 4], ids=["full", "lora"])
def test_a_step_creates_no_tensor_off_the_policys_device(lora, tmp_path):
    """With torch's default device set to 'meta', any tensor that a step creates without
    naming its device lands on 'meta' and fails when it meets the policy's tensors: so the
    step, its evaluation and its checkpoint pass only if every tensor is placed explicitly,
    which is what makes them run whole on a GPU."""
    cfg = tiny_config(tmp_path, beta=0.1, mu=2, format_reward=0.5, lora_rank=lora, steps=2, dynamic_sampling=True)
    trainer = Trainer(cfg, **QUIET)
    torch.set_default_device("meta")
    try:
        stats = trainer.train_step()
        trainer._evaluate()
        trainer.save()
    finally:
        torch.set_default_device(None)
    assert math.isfinite(stats["loss"]) and stats["kl/k3"] >= 0
    assert all(p.device.type == "cpu" for p in trainer.policy.model.parameters())


def test_auto_device_and_dtype_resolve_and_are_recorded(tmp_path):
    import yaml

    Trainer(tiny_config(tmp_path, steps=1), **QUIET).train()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert saved["device"] == expected  # auto picks an accelerator only where there is one
    assert saved["dtype"] == ("bfloat16" if expected == "cuda" and torch.cuda.is_bf16_supported() else "float32")


@pytest.mark.parametrize("flags, message", [
    (["--device", "gpu"], "device must be auto, cpu, cuda, cuda:N or mps"),
    (["--device", "cuda:x"], "device must be auto, cpu, cuda, cuda:N or mps"),
    (["--lora-rank", "-1"], "--lora-rank must be an integer >= 0"),
    (["--lora-dropout", "1"], r"--lora-dropout must be in \[0, 1\)"),
    (["--keep-checkpoints", "0"], "--keep-checkpoints must be an integer >= 1"),
    (["--report-to", "mlflow"], "unknown tracker"),
    (["--system-prompt", "Be brief."], "--system-prompt needs a chat model"),
    (["--reward-fn", "m:f"], "--reward-fn is for --task userdata"),
    # a task's options under another task would be ignored: the run would train on the default task
    (["--data-path", "train.jsonl"], "--data-path is for --task userdata; this run's task is countdown"),
    (["--data", "train.jsonl"], "--data-path is for --task userdata"),  # argparse's abbreviation of it
    (["--prompt-field", "question"], "--prompt-field is for --task userdata"),
    (["--num-operands", "2"], "--num-operands is for --task arithmetic"),
    (["--task", "arithmetic", "--num-numbers", "4"], "--num-numbers is for --task countdown; this run's task is arithmetic"),
    (["--task", "arithmetic", "--format-reward", "0.1"], "--format-reward is for --task countdown"),
    (["--model", "smollm2-135m", "--num-layers", "2"], "--num-layers is for --model tiny; a loaded model keeps its own shape"),
    # a loaded model, or user data, gets no warm start unless asked: its settings would do nothing
    (["--model", "smollm2-135m", "--warmstart-lr", "1e-3"], "--warmstart-lr needs a warm start"),
    (["--task", "userdata", "--data-path", "x.jsonl", "--warmstart-examples", "10"],
     r"--warmstart-examples needs a warm start \(a loaded model or user data gets no supervised warm start unless "
     r"asked\); add --warmstart-steps N or drop the option."),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")  # fmt: skip
def test_bad_model_options_are_refused_before_any_work(flags, message, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=message):
        main(["train", "--output-dir", str(out), "--steps", "1", "--no-progress", *flags])
    assert not out.exists()


@pytest.mark.parametrize("options", [
    {"warmstart_lr": 1e-3},  # the tiny model on a built-in task is warm-started by default
    {"model": "smollm2-135m", "warmstart_steps": 3, "warmstart_lr": 1e-3},
    {"beta": 0.1, "kl_estimator": "k1"},
    {"lora_rank": 4, "lora_alpha": 8.0},
], ids=lambda o: ",".join(o))  # fmt: skip
def test_an_option_is_accepted_once_what_it_configures_is_on(options):
    from mhpo.train.config import TrainConfig

    assert TrainConfig(**options).validate() is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_a_missing_accelerator_is_an_error_not_a_cpu_run(tmp_path):
    with pytest.raises(SystemExit, match="torch sees no CUDA device"):
        main(["train", "--output-dir", str(tmp_path / "run"), "--device", "cuda", "--no-progress"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_run_on_cuda_trains_and_resumes_on_cpu(tmp_path):
    Trainer(tiny_config(tmp_path, steps=2, device="cuda", format_reward=0.5, beta=0.1), **QUIET).train()
    records = Trainer(tiny_config(tmp_path, steps=3, device="cpu", format_reward=0.5, beta=0.1, resume=True), **QUIET).train()
    assert records[-1]["step"] == 3 and math.isfinite(records[-1]["loss"])


def test_a_generator_state_from_another_device_is_reseeded_on_resume(tmp_path):
    Trainer(tiny_config(tmp_path, steps=1), **QUIET).train()
    path = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    state = torch.load(path, weights_only=False)
    state["generator"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state has another size
    torch.save(state, path)
    lines = []
    Trainer(tiny_config(tmp_path, steps=2, resume=True), log=lines.append).train()
    assert any("saved on another device; reseeded" in line for line in lines)


# ---- LoRA ---------------------------------------------------------------------------------


def test_lora_trains_only_the_adapters_and_the_reference_is_the_base_model(tmp_path):
    directory = save_local_hf_model(tmp_path / "hf-model")
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(20)])
    cfg = tiny_config(tmp_path, model=directory, task="userdata", data_path=data, lora_rank=4, beta=0.2,
                      lr=5e-2, steps=2, temperature=1.0)  # fmt: skip
    trainer = Trainer(cfg, **QUIET)
    assert trainer.reference is None  # no second copy of the model in memory
    trainable = {n for n, p in trainer.policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    base = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters() if not p.requires_grad}
    # Adapters start at zero (LoRA's B = 0); push them off zero so that policy and reference differ.
    with torch.no_grad():
        for n, p in trainer.policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    stats = trainer.train_step()
    assert all(torch.equal(p, base[n]) for n, p in trainer.policy.model.named_parameters() if n in base)

    fresh = load_policy(ModelConfig(directory))  # the base model as loaded from disk
    rollout = generate(trainer.policy, [[5, 6, 7]] * 2 + [[8, 9]] * 2, max_new_tokens=4,
                       generator=torch.Generator().manual_seed(1))
    batch, _ = pack_batch(Collected(rollout, torch.tensor([1.0, 0.0, 0.0, 1.0])), trainer.policy, trainer.spec, trainer.cfg)
    reference = reference_logprobs(trainer.policy, trainer.reference, batch, trainer.cfg)
    expected, _ = fresh.completion_logprobs(batch.sequences, batch.attention, batch.width)
    torch.testing.assert_close(reference, expected, rtol=0, atol=1e-6)
    policy_logp = completion_logprobs(trainer.policy, batch, trainer.cfg)
    assert (policy_logp - reference).abs()[batch.mask.bool()].max() > 1e-3  # the adapters change the policy
    assert stats["kl/k3"] > 0


def test_a_lora_run_resumes_bit_identically(tmp_path):
    directory = save_local_hf_model(tmp_path / "hf-model")
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(20)])
    options = dict(model=directory, task="userdata", data_path=data, lora_rank=2, lora_target_modules="q_proj,v_proj",
                   beta=0.1, lr=1e-2, checkpoint_every=1)  # fmt: skip
    whole = Trainer(tiny_config(tmp_path / "a", steps=3, **options), **QUIET).train()
    Trainer(tiny_config(tmp_path / "b", steps=2, **options), **QUIET).train()
    resumed = Trainer(tiny_config(tmp_path / "b", steps=3, resume=True, **options), **QUIET).train()
    assert whole[-1]["loss"] == resumed[-1]["loss"] and whole[-1]["kl/k3"] == resumed[-1]["kl/k3"]


def test_an_unknown_lora_target_module_is_named(tmp_path):
    with pytest.raises(ValueError, match="Check --lora-target-modules"):
        load_policy(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)).add_lora(
            LoraSettings(4, target_modules="no_such_proj")
        )


# ---- export -------------------------------------------------------------------------------


def _perturb_trainable(trainer, scale=0.05):
    with torch.no_grad():
        for p in trainer.policy.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * scale)
    trainer.save()


def test_export_of_the_tiny_model_loads_and_generates_with_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = Trainer(tiny_config(tmp_path, steps=1), **QUIET)
    trainer.train()
    _perturb_trainable(trainer)
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    problem = trainer.eval_problems[0]
    ids = tokenizer(problem.prompt).input_ids
    assert ids == trainer.policy.tokenizer.prompt_ids(problem)  # same ids, BOS included
    inputs = torch.tensor([ids])
    torch.testing.assert_close(model(inputs).logits, trainer.policy.model(inputs).logits, rtol=0, atol=1e-5)
    out = model.generate(inputs, max_new_tokens=6, do_sample=False)
    ours = generate(trainer.policy, [ids], max_new_tokens=6, temperature=0.0)
    assert tokenizer.decode(out[0, len(ids):], skip_special_tokens=True) == ours.texts[0]


@pytest.mark.parametrize("adapter_only", [False, True], ids=["merged", "adapter"])
def test_export_of_a_lora_run_on_a_hugging_face_model(adapter_only, tmp_path):
    from transformers import AutoModelForCausalLM

    directory = save_local_hf_model(tmp_path / "hf-model")
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(20)])
    trainer = Trainer(tiny_config(tmp_path, model=directory, task="userdata", data_path=data, lora_rank=4, steps=1), **QUIET)
    trainer.train()
    _perturb_trainable(trainer)
    flags = ["--adapter-only"] if adapter_only else []
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "out"), *flags]) == 0
    if adapter_only:
        from peft import PeftModel

        assert (tmp_path / "out" / "adapter_config.json").exists()
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(directory), tmp_path / "out")
    else:
        assert not (tmp_path / "out" / "adapter_config.json").exists()
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
        assert not any("lora" in n for n, _ in model.named_parameters())
    inputs = torch.tensor([[1, 20, 15, 26, 15, 30]])
    expected = trainer.policy.model(inputs).logits
    assert (expected - AutoModelForCausalLM.from_pretrained(directory)(inputs).logits).abs().max() > 1e-3
    torch.testing.assert_close(model(inputs).logits, expected, rtol=0, atol=1e-5)


def test_export_refuses_to_overwrite_and_to_invent_an_adapter(tmp_path):
    Trainer(tiny_config(tmp_path, steps=1), **QUIET).train()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="exists and is not empty"):
        main(["export", "--run", str(tmp_path / "run"), "--out", str(taken)])
    assert (taken / "mine.txt").read_text() == "keep me"
    with pytest.raises(SystemExit, match="trained without LoRA"):
        main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "new"), "--adapter-only"])
    assert not (tmp_path / "new").exists()


def test_keep_checkpoints_bounds_what_stays_on_disk(tmp_path):
    Trainer(tiny_config(tmp_path, steps=4, checkpoint_every=1, keep_checkpoints=1), **QUIET).train()
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-000004.pt"]


# ---- data ---------------------------------------------------------------------------------


def test_a_system_prompt_goes_before_prompts_that_have_none(tmp_path):
    from transformers import AutoTokenizer

    from mhpo.tasks.base import Problem

    hf = AutoTokenizer.from_pretrained(_chat_model(tmp_path))
    tokenizer = HFTokenizer(hf, system_prompt="Answer in <answer> tags.")
    plain = Problem(prompt="2+2?", instruction="2+2?", answer="4")
    assert tokenizer.prompt_ids(plain) == hf.encode("[system]Answer in <answer> tags.[user]2+2?[assistant]",
                                                    add_special_tokens=False)  # fmt: skip
    own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    conversation = Problem(prompt="2+2?", instruction="2+2?", answer="4", data={"messages": own})
    assert tokenizer.prompt_ids(conversation) == hf.encode("[system]Be brief.[user]2+2?[assistant]", add_special_tokens=False)
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        HFTokenizer(AutoTokenizer.from_pretrained(save_local_hf_model(tmp_path / "plain")), system_prompt="x")


def test_several_reward_functions_are_weighted_and_logged_each(tmp_path, monkeypatch):
    (tmp_path / "rewards.py").write_text(
        "def length(completion, answer, prompt):\n    return float(len(completion))\n"
        "def has_digit(completion, answer, prompt):\n    return float(any(c.isdigit() for c in completion))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(20)])
    argv = ["train", "--task", "userdata", "--data-path", data, "--output-dir", str(tmp_path / "run"), "--steps", "1",
            "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--intermediate-size", "64",
            "--batch-size", "8", "--group-size", "4", "--max-new-tokens", "5", "--eval-size", "2", "--no-progress",
            "--warmstart-steps", "0", "--reward-fn", "rewards:length", "--reward-fn", "rewards:has_digit",
            "--reward-weights", "0.5,2"]  # fmt: skip
    assert main(argv) == 0
    record = read_metrics(tmp_path / "run" / "metrics.jsonl")[1]
    assert record["reward/mean"] == pytest.approx(0.5 * record["reward_fn/length"] + 2 * record["reward_fn/has_digit"])
    assert record["reward_fn/length"] > 0
    with pytest.raises(SystemExit, match=r"--reward-weights gives 1 weight\(s\) for 2"):
        main([*argv[:-1], "1", "--output-dir", str(tmp_path / "other")])


# ---- trackers -----------------------------------------------------------------------------


def test_report_to_tensorboard_and_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    Trainer(tiny_config(tmp_path, steps=2, report_to="tensorboard,wandb", project="mhpo-test"), **QUIET).train()
    run = tmp_path / "run"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))


def test_report_to_trackio(tmp_path):
    """In its own process, because trackio reads TRACKIO_DIR (where its SQLite store lives)
    when it is imported; every step's metrics reach the store under the run's name."""
    import sqlite3
    import subprocess
    import sys

    pytest.importorskip("trackio")
    env = {**__import__("os").environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "mhpo.cli", "train", "--output-dir", str(tmp_path / "run"), "--steps", "2",
            "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--intermediate-size", "64",
            "--warmstart-steps", "0", "--batch-size", "8", "--group-size", "4", "--max-new-tokens", "4",
            "--eval-size", "2", "--eval-k", "1", "--no-progress", "--report-to", "trackio", "--project", "mhpo-test"]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(tmp_path / "trackio" / "mhpo-test.db") as db:
        rows = db.execute("select run_name, step, metrics from metrics").fetchall()
    steps = {step for name, step, _ in rows if name == "run"}
    assert steps == {0, 1, 2}
    assert any("reward/mean" in json.loads(metrics) for _, _, metrics in rows)


def test_a_tracker_that_is_not_installed_fails_before_any_work(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_trackio(name, *args, **kwargs):
        if name == "trackio":
            raise ImportError("No module named 'trackio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_trackio)
    with pytest.raises(ValueError, match=r"pip install 'mhpo\[tracking\]'"):
        Trainer(tiny_config(tmp_path, report_to="trackio"), **QUIET)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_eval_of_a_lora_run_uses_its_adapters(tmp_path, capsys):
    directory = save_local_hf_model(tmp_path / "hf-model")
    data = _jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(20)])
    test = _jsonl(tmp_path / "test.jsonl", [{"prompt": f"{i}+2=", "answer": str(i + 2)} for i in range(3)])
    Trainer(tiny_config(tmp_path, model=directory, task="userdata", data_path=data, lora_rank=4, steps=1), **QUIET).train()
    assert main(["eval", "--run", str(tmp_path / "run"), "--eval-data-path", test, "--show", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["problems"] == 3 and shown["source"].endswith("at step 1")


def test_sampling_with_lora_folds_the_adapters_without_touching_the_weights(tmp_path):
    """Generation runs with the adapters folded into copies of the weights: the same greedy
    completions as the model with its adapters applied layer by layer, and the model's own
    weights and adapters unchanged afterwards."""
    policy = load_policy(ModelConfig(save_local_hf_model(tmp_path / "hf-model")))
    policy.add_lora(LoraSettings(4, alpha=8))
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    before = {n: p.detach().clone() for n, p in policy.model.state_dict().items()}
    prompts = [[1, 20, 15, 26]] * 2 + [[1, 30, 31]]
    rollout = generate(policy, prompts, max_new_tokens=8, temperature=0.0)
    policy.model.eval()
    base = load_policy(ModelConfig(str(tmp_path / "hf-model"))).model
    expected = [greedy_reference(policy.model, p, 8, policy.tokenizer.eos_id) for p in prompts]
    assert expected != [greedy_reference(base, p, 8, policy.tokenizer.eos_id) for p in prompts]  # the adapters matter
    assert rollout.completions == expected
    assert all(torch.equal(p, before[n]) for n, p in policy.model.state_dict().items())
    assert any("lora_A" in n for n in policy.model.state_dict())  # still an adapted model



def test_the_model_options_resolve_auto_as_the_trainer_does(monkeypatch):
    """mhpo compare makes the warm start from model_config(base) before any run starts; with
    'auto' it must resolve the dtype as the runs will (bfloat16 where the device supports it),
    or each run would look for, and train, a warm start of its own."""
    import mhpo.train.config as config
    from mhpo.train.config import TrainConfig
    from mhpo.train.build import model_config

    monkeypatch.setattr(config, "_bfloat16_native", lambda device: True)  # as on a bfloat16 GPU
    assert TrainConfig().resolved().dtype == "bfloat16"
    assert model_config(TrainConfig()).dtype == "bfloat16"
    assert model_config(TrainConfig(dtype="float32")).dtype == "float32"


def test_a_tracker_named_twice_is_written_once():
    from mhpo.train.config import TrainConfig

    cfg = TrainConfig(report_to="tensorboard, wandb,tensorboard", tensorboard=True)
    assert cfg.reporters() == ["tensorboard", "wandb"]
