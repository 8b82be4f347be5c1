"""Multi-step integer arithmetic: evaluate an expression such as ``12+7*3``."""

from __future__ import annotations

import dataclasses
import random
import re

from .base import Problem, extract_answer, split_seed
from .expr import parse_expression

_INTEGER = re.compile(r"-?\d{1,15}")
ANSWER_FORMATS = ("tag", "number")


@dataclasses.dataclass(frozen=True)
class ArithmeticConfig:
    """Difficulty of generated arithmetic problems.

    Attributes:
        num_operands: operands per expression (2..6).
        max_operand: operands are drawn from 0..max_operand.
        operators: operators used (subset of '+-*'; the answer is always an integer).
        answer_format: ``"tag"`` asks for the integer inside ``<answer></answer>`` and scores
            the tag's content (or, without a tag, the first line) as a whole; ``"number"`` asks
            "What is 12+7*3? Reply with only the number." and scores the last integer of the
            completion (the tag's content if there is one), the usual convention for small
            instruct models that do not follow an output format.
    """

    num_operands: int = 3
    max_operand: int = 20
    operators: str = "+-*"
    answer_format: str = "tag"

    def __post_init__(self) -> None:
        if not 2 <= self.num_operands <= 6:
            raise ValueError(f"num_operands must be in 2..6; got {self.num_operands}.")
        if self.max_operand < 1:
            raise ValueError("max_operand must be >= 1.")
        if not self.operators or set(self.operators) - set("+-*"):
            raise ValueError(f"operators must be a non-empty subset of '+-*'; got '{self.operators}'.")
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}; got '{self.answer_format}'.")


class Arithmetic:
    """Integer arithmetic with operator precedence; reward 1 for the exact integer."""

    name = "arithmetic"

    def __init__(self, config: ArithmeticConfig | None = None) -> None:
        self.config = config or ArithmeticConfig()

    def problems(self, split: str, count: int, seed: int) -> list[Problem]:
        rng = random.Random(split_seed(split, seed))
        cfg = self.config
        out = []
        for _ in range(count):
            parts = [str(rng.randint(0, cfg.max_operand))]
            for _ in range(cfg.num_operands - 1):
                parts += [rng.choice(cfg.operators), str(rng.randint(0, cfg.max_operand))]
            expression = "".join(parts)
            value = parse_expression(expression).value  # our own generated text, exact
            if cfg.answer_format == "tag":
                instruction = f"Compute {expression}. Give only the integer result inside <answer></answer>."
            else:
                instruction = f"What is {expression}? Reply with only the number."
            out.append(Problem(prompt=f"{expression}=", instruction=instruction, answer=str(int(value))))
        return out

    def score(self, completion: str, problem: Problem) -> float:
        answer = extract_answer(completion)
        if self.config.answer_format == "number" and "<answer>" not in completion[:4096]:
            numbers = _INTEGER.findall(completion[:4096])
            answer = numbers[-1] if numbers else ""
        return 1.0 if _INTEGER.fullmatch(answer) and int(answer) == int(problem.answer) else 0.0

    def demonstration(self, problem: Problem) -> str | None:
        return problem.answer
