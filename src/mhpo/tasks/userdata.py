"""User data: prompts and answers from a JSONL/JSON/CSV/Parquet file or a `datasets` dataset,
scored with math-verify or with a user reward function given as ``module:function``."""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import importlib
import json
import math
import multiprocessing
import numbers
import os
import pathlib
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

from .base import Problem, extract_answer, split_seed

FLOAT32_MAX = 3.4028234663852886e38
FILE_FORMATS = (".jsonl", ".json", ".csv", ".parquet")


@dataclasses.dataclass(frozen=True)
class UserDataConfig:
    """Where the data is and how to score it.

    Attributes:
        path: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, or a `datasets` name or local
            dataset directory (loaded with ``datasets.load_dataset``; no download happens offline).
        prompt_field: the column holding the prompt: text, or a conversation (a list of
            ``{"role": ..., "content": ...}`` messages, as TRL datasets have).
        answer_field: the column holding the reference answer.
        split: the dataset split to read.
        eval_fraction: share of rows held out for evaluation (after a seeded shuffle).
        eval_path: a separate held-out file; then every row of ``path`` is for training and
            every row of ``eval_path`` for evaluation.
        reward_fn: ``module:function`` called as ``function(completion, answer, prompt) -> float``,
            or several of them; default: math-verify equivalence of the answer and the completion
            (1 or 0). With several, the reward is their weighted sum.
        reward_weights: one weight per reward function (default: 1 each).
    """

    path: str = ""
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    split: str = "train"
    eval_fraction: float = 0.1
    eval_path: str = ""
    reward_fn: str | tuple[str, ...] = ""
    reward_weights: tuple[float, ...] = ()


def load_reward_fn(spec: str) -> Callable[[str, str, str], float]:
    """Import ``module:function``; errors name what is missing. The current directory is
    searched first, as ``python script.py`` would, so ``--reward-fn mymodule:score`` finds
    ``./mymodule.py``; it is on ``sys.path`` only while that module is imported, so that a
    stray file beside the data (a ``rich.py``) cannot stand in for a library imported later."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"reward_fn must look like 'package.module:function'; got '{spec}'.")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"cannot import reward module '{module_name}': {error}. It is looked up in the current directory "
            f"({cwd}) and on PYTHONPATH."
        ) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"'{module_name}' has no callable '{attr}' to use as reward function.")
    return fn


def reward_name(spec: str, specs: list[str]) -> str:
    """The metric name of a reward function: its function name, or module.function when two
    functions share a name."""
    module, _, attr = spec.partition(":")
    clash = sum(s.partition(":")[2] == attr for s in specs) > 1
    return f"{module}.{attr}" if clash else attr


# ---- math-verify ---------------------------------------------------------------------------

VERIFY_TIMEOUT = 5  # seconds for parsing and for verification, each


def _as_latex(text: str) -> str:
    return text if "$" in text or "\\" not in text else f"${text}$"


def _verify(answer: str, completion: str) -> float:
    """math-verify's verdict, with its own (signal-based) timeouts: main thread only."""
    from math_verify import parse, verify

    try:
        gold = parse(answer if "$" in answer or "\\" in answer else f"${answer}$", parsing_timeout=VERIFY_TIMEOUT)
        predicted = parse(completion, parsing_timeout=VERIFY_TIMEOUT)
        return 1.0 if predicted and verify(gold, predicted, timeout_seconds=VERIFY_TIMEOUT) else 0.0
    except Exception:  # math-verify raises on odd input, and on a timeout: untrusted output scores 0
        return 0.0


_worker: concurrent.futures.ProcessPoolExecutor | None = None
_worker_lock = threading.Lock()


def _verify_off_main_thread(answer: str, completion: str) -> float:
    """math-verify's timeouts use SIGALRM, which only the main thread can set: from another
    thread every call raised and scored 0. There, verification runs in a helper process
    (whose main thread can time out), and one that hangs past the timeout is killed."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            atexit.register(_worker.shutdown, wait=False, cancel_futures=True)
        future = _worker.submit(_verify, answer, completion)
        try:
            return future.result(timeout=3 * VERIFY_TIMEOUT + 30)  # parse, parse, verify, plus start-up
        except concurrent.futures.TimeoutError:
            for process in list(getattr(_worker, "_processes", {}).values()):
                process.kill()
            _worker.shutdown(wait=False, cancel_futures=True)
            _worker = None
            return 0.0


def math_verify_reward(completion: str, answer: str, prompt: str = "") -> float:
    """1.0 when math-verify finds the completion's answer equivalent to the reference.

    An answer inside ``<answer>...</answer>`` is taken out of the tags first (math-verify
    reads ``<answer>33</answer>`` as no answer at all); without tags the whole completion is
    searched, as math-verify does.

    >>> math_verify_reward("<answer>33</answer>", "33"), math_verify_reward("so it is 32", "33")
    (1.0, 0.0)
    """
    text = completion[:4096]
    if "<answer>" in text:
        text = _as_latex(extract_answer(text))
    if threading.current_thread() is threading.main_thread():
        return _verify(str(answer), text)
    return _verify_off_main_thread(str(answer), text)


# ---- reading the rows ------------------------------------------------------------------------


def _read_json_lines(path: pathlib.Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON object ({error.msg}); fix or remove that line.") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object with your fields; got {type(row).__name__}.")
            rows.append(row)
    return rows


def _read_file(path: pathlib.Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"data file {path} does not exist; check --data-path / --eval-data-path.")
    if path.suffix == ".jsonl":
        return _read_json_lines(path)
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return _read_json_lines(path)  # JSON lines under a .json name
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise ValueError(f"{path} must hold a list of objects (or one object per line).")
        return data
    import datasets

    kind = {".csv": "csv", ".parquet": "parquet"}[path.suffix]
    try:
        dataset = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as error:
        raise ValueError(f"cannot read {path} as {kind}: {error}") from None
    return [dict(row) for row in dataset]


def read_rows(location: str, split: str = "train") -> list[dict]:
    """The rows of a data file, a saved dataset directory or a `datasets` name; every failure
    is a ValueError that names the file (and line) and the fix."""
    path = pathlib.Path(location)
    if path.suffix:
        if path.suffix not in FILE_FORMATS:
            raise ValueError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(FILE_FORMATS)}.")
        rows = _read_file(path)
    else:
        import datasets

        try:
            if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
                dataset = datasets.load_from_disk(str(path))
                dataset = dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
            else:
                dataset = datasets.load_dataset(location, split=split)
        except Exception as error:
            raise ValueError(
                f"cannot load the dataset '{location}' ({type(error).__name__}: {str(error)[:200]}); give a "
                f"{'/'.join(FILE_FORMATS)} file, a directory saved with datasets' save_to_disk, or a dataset name "
                "that is reachable."
            ) from None
        rows = [dict(row) for row in dataset]
    if not rows:
        raise ValueError(f"{location} holds no rows; give a file with at least one prompt and answer.")
    return rows


def _messages(value: Any) -> list[dict[str, str]] | None:
    """A conversation as a list of {role, content} messages with text content, else None."""
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    return None


def to_problem(row: dict, prompt_field: str, answer_field: str, where: str) -> Problem:
    """One row as a Problem; a missing or empty field is an error naming the row."""
    for field in (prompt_field, answer_field):
        if field not in row:
            raise ValueError(f"{where} has no field '{field}' (its fields: {', '.join(map(str, row))}); "
                             "fix the row or set --prompt-field/--answer-field.")  # fmt: skip
        if row[field] is None or (isinstance(row[field], str) and not row[field].strip()):
            raise ValueError(f"{where}: field '{field}' is empty; every row needs a prompt and an answer.")
    prompt, answer = row[prompt_field], row[answer_field]
    if isinstance(answer, bool) or not isinstance(answer, (str, numbers.Number)):
        raise ValueError(f"{where}: answer '{answer_field}' must be text or a number; got {type(answer).__name__}.")
    if isinstance(answer, float) and math.isnan(answer):
        raise ValueError(f"{where}: field '{answer_field}' is empty (NaN); every row needs an answer.")
    if isinstance(answer, numbers.Real) and not math.isfinite(answer):
        raise ValueError(f"{where}: answer '{answer_field}' is {answer}, which no completion can match; give a finite "
                         "number, or the answer as text.")  # fmt: skip
    answer = str(answer)
    if isinstance(prompt, str):
        return Problem(prompt=prompt, instruction=prompt, answer=answer, data={"row": row, "where": where})
    messages = _messages(prompt)
    if messages is None:
        raise ValueError(
            f"{where}: prompt '{prompt_field}' must be text or a conversation (a list of "
            f"{{'role': ..., 'content': ...}} messages); got {type(prompt).__name__}."
        )
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])
    return Problem(prompt=last_user, instruction=last_user, answer=answer,
                   data={"row": row, "messages": messages, "where": where})  # fmt: skip


class UserData:
    """Prompts and answers from the user's data."""

    name = "userdata"

    def __init__(self, config: UserDataConfig) -> None:
        if not config.path:
            raise ValueError("the userdata task needs a data path: --data-path FILE.jsonl (or .parquet, or a dataset).")
        self.config = config
        train = self._problems(config.path)
        if config.eval_path:
            held_out = self._problems(config.eval_path)
        else:
            if len(train) < 2:
                raise ValueError(f"{config.path} has {len(train)} row; need at least 2 (train and eval), "
                                 "or pass a separate --eval-data-path.")  # fmt: skip
            order = list(range(len(train)))
            random.Random(0).shuffle(order)
            n_eval = max(1, int(round(len(train) * config.eval_fraction)))
            train, held_out = [train[i] for i in order[n_eval:]], [train[i] for i in order[:n_eval]]
        self._splits = {"train": train, "eval": held_out}
        specs = [config.reward_fn] if isinstance(config.reward_fn, str) else list(config.reward_fn)
        specs = [spec for spec in specs if spec]
        weights = list(config.reward_weights) or [1.0] * len(specs)
        if len(weights) != len(specs):
            raise ValueError(f"{len(weights)} reward weight(s) for {len(specs)} reward function(s); give one per function.")
        # (name, spec, function, weight); the names key the per-function metrics (reward_fn/NAME)
        self._rewards = [(reward_name(spec, specs), spec, load_reward_fn(spec), float(w)) for spec, w in zip(specs, weights)]
        if not self._rewards:
            self._rewards = [("math_verify", "math-verify", math_verify_reward, 1.0)]
        if specs:  # a broken reward function fails here, before any work
            probe = held_out[0]
            self.score(f"<answer>{probe.answer}</answer>", probe)

    def _problems(self, location: str) -> list[Problem]:
        rows = read_rows(location, self.config.split)
        fields = self.config.prompt_field, self.config.answer_field
        return [to_problem(row, *fields, f"{location} row {i}") for i, row in enumerate(rows, 1)]

    def problems(self, split: str, count: int, seed: int) -> list[Problem]:
        rows = self._splits["eval" if split == "eval" else "train"]
        rng = random.Random(split_seed(split, seed))
        if split == "eval":
            return rows[:count]
        return [rows[rng.randrange(len(rows))] for _ in range(count)]

    @property
    def reward_names(self) -> list[str]:
        return [name for name, *_ in self._rewards]

    def score(self, completion: str, problem: Problem) -> float:
        """The reward: the weighted sum of the reward functions' values."""
        return self.score_parts(completion, problem)[0]

    def score_parts(self, completion: str, problem: Problem) -> tuple[float, dict[str, float]]:
        """The reward and each function's own (unweighted) value. An exception or a value that
        is not a finite number is an error naming the function, never a silent 0."""
        parts = {}
        for name, spec, fn, _ in self._rewards:
            try:
                value = fn(completion, problem.answer, problem.prompt)
            except SystemExit as error:  # sys.exit() in a reward would end training with its code
                raise ValueError(
                    f"reward function {spec} called sys.exit({error.code!r}) (prompt {problem.prompt[:60]!r}); a reward "
                    "function must return a number, not end the process."
                ) from None
            except Exception as error:
                raise ValueError(
                    f"reward function {spec} raised {type(error).__name__}: {error} (prompt "
                    f"{problem.prompt[:60]!r}); fix it so that it returns a number for any completion."
                ) from error
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
                raise ValueError(
                    f"reward function {spec} returned {value!r} for prompt {problem.prompt[:60]!r}; "
                    "it must return a finite number (float)."
                )
            parts[name] = float(value)
        total = sum(w * parts[name] for name, _, _, w in self._rewards)
        if not abs(total) <= FLOAT32_MAX:  # rewards are float32 tensors: this would become inf, then NaN
            raise ValueError(
                f"the reward {total!r} of {', '.join(spec for _, spec, _, _ in self._rewards)} (prompt "
                f"{problem.prompt[:60]!r}) is beyond float32's range (|r| <= {FLOAT32_MAX:.3g}); rescale the reward."
            )
        return total, parts

    def all_problems(self) -> list[Problem]:
        """Every training and held-out row, e.g. to check that each prompt fits the model."""
        return self._splits["train"] + self._splits["eval"]

    def demonstration(self, problem: Problem) -> str | None:
        return None
