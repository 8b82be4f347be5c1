"""What a task is: problems with prompts and answers, a scorer, and (optionally) a solver."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Problem:
    """One prompt with what is needed to score an answer to it.

    Attributes:
        prompt: compact prompt for character-level models (e.g. ``"3,5,2>16="``).
        instruction: natural-language prompt for pretrained instruct models.
        answer: the reference answer (a target, a number, a LaTeX string...).
        data: task-specific fields (the numbers of a Countdown problem, a user row).
    """

    prompt: str
    instruction: str
    answer: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


class Task(Protocol):
    """The interface the trainer uses. ``demonstration`` may return None (no solver)."""

    name: str

    def problems(self, split: str, count: int, seed: int) -> list[Problem]: ...

    def score(self, completion: str, problem: Problem) -> float: ...

    def demonstration(self, problem: Problem) -> str | None: ...


def extract_answer(completion: str) -> str:
    """The answer part of a completion: inside the last ``<answer>...</answer>`` if present,
    otherwise the first line; surrounding spaces removed. Bounded work on any input."""
    text = completion[:4096]
    start = text.rfind("<answer>")
    if start >= 0:
        end = text.find("</answer>", start)
        return text[start + len("<answer>") : end if end >= 0 else None].strip()
    return text.strip().split("\n", 1)[0].strip()


def split_seed(split: str, seed: int) -> int:
    """Independent, reproducible streams for the train and eval splits of one seed."""
    offsets = {"train": 0, "eval": 1_000_003, "demo": 2_000_003}
    if split not in offsets:
        raise ValueError(f"unknown split '{split}'; use 'train', 'eval' or 'demo'.")
    return random.Random(seed * 7_919 + offsets[split]).getrandbits(63)
