"""Multi-step integer arithmetic: evaluate an expression such as ``12+7*3``."""

from __future__ import annotations

import dataclasses
import random
import re

from .base import Problem, extract_answer, split_seed
from .expr import parse_expression

_INTEGER = re.compile(r"-?\d{1,15}")


@dataclasses.dataclass(frozen=True)
class ArithmeticConfig:
    """Difficulty of generated arithmetic problems.

    Attributes:
        num_operands: operands per expression (2..6).
        max_operand: operands are drawn from 0..max_operand.
        operators: operators used (subset of '+-*'; the answer is always an integer).
    """

    num_operands: int = 3
    max_operand: int = 20
    operators: str = "+-*"

    def __post_init__(self) -> None:
        if not 2 <= self.num_operands <= 6:
            raise ValueError(f"num_operands must be in 2..6; got {self.num_operands}.")
        if self.max_operand < 1:
            raise ValueError("max_operand must be >= 1.")
        if not self.operators or set(self.operators) - set("+-*"):
            raise ValueError(f"operators must be a non-empty subset of '+-*'; got '{self.operators}'.")


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
            out.append(
                Problem(
                    prompt=f"{expression}=",
                    instruction=f"Compute {expression}. Give only the integer result inside <answer></answer>.",
                    answer=str(int(value)),
                )
            )
        return out

    def score(self, completion: str, problem: Problem) -> float:
        answer = extract_answer(completion)
        return 1.0 if _INTEGER.fullmatch(answer) and int(answer) == int(problem.answer) else 0.0

    def demonstration(self, problem: Problem) -> str | None:
        return problem.answer
