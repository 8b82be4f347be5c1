"""User data: prompts and answers from a JSONL/Parquet file or a `datasets` dataset, scored
with math-verify or with a user reward function given as ``module:function``."""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import random
from collections.abc import Callable

from .base import Problem, split_seed


@dataclasses.dataclass(frozen=True)
class UserDataConfig:
    """Where the data is and how to score it.

    Attributes:
        path: a ``.jsonl``/``.json``/``.parquet`` file, or a `datasets` name or local dataset
            directory (loaded with ``datasets.load_dataset``; no download happens offline).
        prompt_field: the column holding the prompt.
        answer_field: the column holding the reference answer.
        split: the dataset split to read.
        eval_fraction: share of rows held out for evaluation (after a seeded shuffle).
        reward_fn: ``module:function`` called as ``function(completion, answer, prompt) -> float``;
            default: math-verify equivalence of the answer and the completion (1 or 0).
    """

    path: str = ""
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    split: str = "train"
    eval_fraction: float = 0.1
    reward_fn: str = ""


def load_reward_fn(spec: str) -> Callable[[str, str, str], float]:
    """Import ``module:function``; errors name what is missing."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"reward_fn must look like 'package.module:function'; got '{spec}'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import reward module '{module_name}': {error}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"'{module_name}' has no callable '{attr}' to use as reward function.")
    return fn


def math_verify_reward(completion: str, answer: str, prompt: str = "") -> float:
    """1.0 when math-verify finds the completion's answer equivalent to the reference."""
    from math_verify import parse, verify

    try:
        gold = parse(answer if "$" in answer or "\\" in answer else f"${answer}$")
        predicted = parse(completion)
        return 1.0 if predicted and verify(gold, predicted) else 0.0
    except Exception:  # math-verify raises on odd input; untrusted output scores 0
        return 0.0


def _read_rows(cfg: UserDataConfig) -> list[dict]:
    path = pathlib.Path(cfg.path)
    if not cfg.path:
        raise ValueError("the userdata task needs a data path: --data-path FILE.jsonl (or .parquet, or a dataset).")
    import datasets

    if path.suffix in (".jsonl", ".json"):
        dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    elif path.suffix == ".parquet":
        dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    elif path.is_dir() and (path / "dataset_info.json").exists():
        dataset = datasets.load_from_disk(str(path))
        dataset = dataset[cfg.split] if isinstance(dataset, datasets.DatasetDict) else dataset
    else:
        dataset = datasets.load_dataset(cfg.path, split=cfg.split)
    missing = [f for f in (cfg.prompt_field, cfg.answer_field) if f not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{cfg.path} has no field(s) {missing}; its columns are {dataset.column_names}. "
            "Set --prompt-field/--answer-field."
        )
    return [dict(row) for row in dataset]


class UserData:
    """Prompts and answers from the user's data."""

    name = "userdata"

    def __init__(self, config: UserDataConfig) -> None:
        self.config = config
        rows = _read_rows(config)
        if len(rows) < 2:
            raise ValueError(f"{config.path} has {len(rows)} rows; need at least 2 (train and eval).")
        order = list(range(len(rows)))
        random.Random(0).shuffle(order)
        n_eval = max(1, int(round(len(rows) * config.eval_fraction)))
        self._splits = {"eval": [rows[i] for i in order[:n_eval]], "train": [rows[i] for i in order[n_eval:]]}
        self._reward = load_reward_fn(config.reward_fn) if config.reward_fn else math_verify_reward

    def _problem(self, row: dict) -> Problem:
        prompt, answer = str(row[self.config.prompt_field]), str(row[self.config.answer_field])
        return Problem(prompt=prompt, instruction=prompt, answer=answer, data={"row": row})

    def problems(self, split: str, count: int, seed: int) -> list[Problem]:
        rows = self._splits["eval" if split == "eval" else "train"]
        rng = random.Random(split_seed(split, seed))
        if split == "eval":
            return [self._problem(r) for r in rows[:count]]
        return [self._problem(rows[rng.randrange(len(rows))]) for _ in range(count)]

    def score(self, completion: str, problem: Problem) -> float:
        value = float(self._reward(completion, problem.answer, problem.prompt))
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"reward function returned {value} for prompt {problem.prompt[:60]!r}; return a finite float.")
        return value

    def demonstration(self, problem: Problem) -> str | None:
        return None


