"""The data people have: user files, conversational prompts, reward functions that score what
they should (or fail loudly), and `mhpo eval` on a separate test file."""

import json
import subprocess
import sys

import pytest

from mhpo.tasks.base import Problem
from mhpo.tasks.userdata import UserData, UserDataConfig, load_reward_fn, math_verify_reward
from mhpo.train.tokenizer import CharTokenizer, HFTokenizer
from mhpo.train.trainer import Trainer
from trainer_helpers import save_local_hf_model, tiny_config


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_math_verify_scores_a_tagged_answer():
    # The answer format the project asks instruct models to use; math-verify alone reads no answer in it.
    assert math_verify_reward("<answer>33</answer>", "33") == 1.0
    assert math_verify_reward("Reasoning first. <answer>\\frac{1}{2}</answer>", "0.5") == 1.0
    assert math_verify_reward("<answer>34</answer>", "33") == 0.0
    assert math_verify_reward("<answer> 33 </answer>", "33") == 1.0
    assert math_verify_reward("the answer is $33$", "33") == 1.0  # untagged: searched as before


def _reward_module(tmp_path, body):
    (tmp_path / "my_reward.py").write_text(body)
    return "my_reward:score"


@pytest.fixture
def clean_imports(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_reward", raising=False)
    yield
    sys.modules.pop("my_reward", None)


def test_reward_module_is_found_in_the_current_directory(tmp_path, monkeypatch, clean_imports):
    _reward_module(tmp_path, "def score(completion, answer, prompt):\n    return float(answer in completion)\n")
    monkeypatch.chdir(tmp_path)
    sys.path[:] = [p for p in sys.path if p not in ("", str(tmp_path))]  # as under the `mhpo` console script
    assert load_reward_fn("my_reward:score")("x 7", "7", "") == 1.0


@pytest.mark.parametrize(
    "body, message",
    [
        ("def score(completion, answer, prompt):\n    raise KeyError('gold')\n", "raised KeyError"),
        ("def score(completion, answer, prompt):\n    return 'yes'\n", "returned 'yes'"),
        ("def score(completion, answer, prompt):\n    return float('nan')\n", "returned nan"),
    ],
)
def test_a_broken_reward_function_fails_before_any_work(body, message, tmp_path, monkeypatch, clean_imports):
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}+1", "answer": str(i + 1)} for i in range(5)])
    monkeypatch.chdir(tmp_path)
    spec = _reward_module(tmp_path, body)
    with pytest.raises(ValueError, match=f"reward function my_reward:score {message}"):
        UserData(UserDataConfig(data, reward_fn=spec))


def test_a_reward_function_that_fails_later_is_an_error_not_a_zero(tmp_path, monkeypatch, clean_imports):
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"{i}+1", "answer": str(i + 1)} for i in range(5)])
    monkeypatch.chdir(tmp_path)
    spec = _reward_module(tmp_path, "def score(completion, answer, prompt):\n    return 1.0 / len(completion)\n")
    task = UserData(UserDataConfig(data, reward_fn=spec))
    problem = task.problems("eval", 1, seed=0)[0]
    with pytest.raises(ValueError, match="raised ZeroDivisionError"):
        task.score("", problem)


def test_conversational_prompts_go_through_the_chat_template(tmp_path):
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": conversation, "answer": 4}, {"prompt": "3+3?", "answer": 6}])
    task = UserData(UserDataConfig(data, eval_fraction=0.5))
    problems = {p.answer: p for p in task.problems("eval", 1, seed=0) + task.problems("train", 8, seed=0)}
    chat = problems["4"]
    assert chat.data["messages"] == conversation and chat.prompt == "What is 2+2?"  # never the text of a list

    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(save_local_hf_model(tmp_path / "model"))
    hf.chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}[assistant]"
    ids = HFTokenizer(hf).prompt_ids(chat)
    assert ids == hf.encode("[system]Be brief.[user]What is 2+2?[assistant]", add_special_tokens=False)
    with pytest.raises(ValueError, match="need a chat model with a chat template"):
        CharTokenizer().prompt_ids(chat)


def test_conversational_prompts_with_the_tiny_model_fail_before_any_work(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"{i}+1"}], "answer": i + 1} for i in range(4)]
    data = _write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(ValueError, match="need a chat model"):
        Trainer(tiny_config(tmp_path, task="userdata", data_path=data, warmstart_steps=0), log=lambda *a: None)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "1+1"}, "row 2 has no field 'answer'"),
        ({"prompt": "1+1", "answer": None}, "row 2: field 'answer' is empty"),
        ({"prompt": None, "answer": "2"}, "row 2: field 'prompt' is empty"),
        ({"prompt": {"text": "1+1"}, "answer": "2"}, "row 2: prompt 'prompt' must be text or a conversation"),
        ({"prompt": "1+1", "answer": ["2"]}, "row 2: answer 'answer' must be text or a number"),
    ],
)
def test_missing_or_null_fields_name_the_row(row, message, tmp_path):
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "0+1", "answer": "1"}, row, {"prompt": "2+2", "answer": 4}])
    with pytest.raises(ValueError, match=message):
        UserData(UserDataConfig(data))


def test_a_separate_eval_file_and_csv(tmp_path):
    train = _write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"t{i}", "answer": i} for i in range(3)])
    test = tmp_path / "test.csv"
    test.write_text("prompt,answer\ne0,10\ne1,11\n")
    task = UserData(UserDataConfig(train, eval_path=str(test)))
    assert [p.prompt for p in task.problems("eval", 10, seed=0)] == ["e0", "e1"]
    assert {p.prompt for p in task.problems("train", 50, seed=0)} == {"t0", "t1", "t2"}
    assert Problem in {type(p) for p in task.problems("eval", 1, seed=0)}


def test_eval_of_a_run_honours_its_flags(tmp_path, monkeypatch):
    _write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"{i}", "answer": str(i)} for i in range(20)])
    test = _write_jsonl(tmp_path / "test.jsonl", [{"prompt": f"{i}", "answer": str(i)} for i in range(7)])
    monkeypatch.chdir(tmp_path)
    Trainer(tiny_config(tmp_path, task="userdata", data_path="train.jsonl", steps=1, eval_size=2), log=lambda *a: None).train()
    run = tmp_path / "run"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def mhpo_eval(*flags):
        return subprocess.run([sys.executable, "-m", "mhpo.cli", "eval", "--run", str(run), "--json", *flags],
                              capture_output=True, text=True, cwd=elsewhere)  # fmt: skip

    whole = mhpo_eval("--eval-data-path", test, "--k", "1")
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["problems"] == 7  # the whole separate file
    sized = mhpo_eval("--eval-data-path", test, "--size", "3", "--k", "1")
    assert json.loads(sized.stdout)["problems"] == 3
    own = mhpo_eval("--k", "1")  # the run's own held-out rows, its data path found from another directory
    assert own.returncode == 0 and json.loads(own.stdout)["problems"] == 2, own.stderr
    negative = mhpo_eval("--size", "-1")
    assert negative.returncode == 2 and "must be >= 1" in negative.stderr
    refused = mhpo_eval("--lr", "0.1")  # a training option is not an eval option at all
    assert refused.returncode == 2 and "unrecognized arguments: --lr" in refused.stderr
    refused = mhpo_eval("--model", "tiny")  # the model of a run is its checkpoint's
    assert refused.returncode == 1 and "--model cannot apply" in refused.stderr
