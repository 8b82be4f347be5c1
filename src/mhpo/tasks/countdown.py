"""Countdown: reach a target with + - * / over given numbers, each used at most once."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter
from fractions import Fraction

from .base import Problem, extract_answer, split_seed
from .expr import ExpressionError, parse_expression


@dataclasses.dataclass(frozen=True)
class CountdownConfig:
    """Difficulty of generated Countdown problems.

    Attributes:
        num_numbers: how many numbers are given (3 or 4 in the studies; 2 to 6 accepted).
        max_number: numbers are drawn from 1..max_number.
        max_target: targets lie in 1..max_target.
        operators: the operators used to build targets (the verifier accepts all four).
        use_all: build targets from all the numbers (harder) rather than from a random subset.
        format_reward: reward for a well-formed answer using allowed numbers that misses the
            target (0 = sparse, the default).
    """

    num_numbers: int = 3
    max_number: int = 9
    max_target: int = 50
    operators: str = "+-*"
    use_all: bool = True
    format_reward: float = 0.0

    def __post_init__(self) -> None:
        if not 2 <= self.num_numbers <= 6:
            raise ValueError(f"num_numbers must be in 2..6; got {self.num_numbers}.")
        if self.max_number < 1 or self.max_target < 1:
            raise ValueError("max_number and max_target must be >= 1.")
        if not self.operators or set(self.operators) - set("+-*/"):
            raise ValueError(f"operators must be a non-empty subset of '+-*/'; got '{self.operators}'.")
        if not 0 <= self.format_reward < 1:
            raise ValueError(f"format_reward must be in [0, 1); got {self.format_reward}.")


# An item is (value, text, level): level 3 = a number, 2 = a product/quotient, 1 = a sum/difference.
Item = tuple[Fraction, str, int]


def _combine(a: Item, b: Item, op: str) -> Item | None:
    """Combine two items with ``op``, adding parentheses only where precedence needs them."""
    (x, ex, lx), (y, ey, ly) = a, b
    if op == "/" and y == 0:
        return None
    if op in "+-":
        right = f"({ey})" if op == "-" and ly == 1 else ey
        return (x + y if op == "+" else x - y), f"{ex}{op}{right}", 1
    left = f"({ex})" if lx == 1 else ex
    right = f"({ey})" if ly == 1 or (op == "/" and ly == 2) else ey
    return (x * y if op == "*" else x / y), f"{left}{op}{right}", 2


def solve(numbers: list[int], target: int, operators: str = "+-*/") -> str | None:
    """An expression reaching ``target`` with each number used at most once, or None.

    Exhaustive search over subsets and combination orders (fine for up to 5 or 6 numbers).
    Prefers expressions that use fewer numbers, then the first found in a fixed order, so the
    demonstrations are deterministic.

    >>> solve([3, 5, 2], 16)
    '(3+5)*2'
    """
    items = [(Fraction(n), str(n), 3) for n in numbers]
    for size in range(1, len(items) + 1):
        for subset in itertools.combinations(items, size):
            found = _search(list(subset), Fraction(target), operators)
            if found is not None:
                return found
    return None


def _search(items: list[Item], target: Fraction, operators: str) -> str | None:
    if len(items) == 1:
        return items[0][1] if items[0][0] == target else None
    for i, j in itertools.permutations(range(len(items)), 2):
        rest = [items[k] for k in range(len(items)) if k not in (i, j)]
        for op in operators:
            if op in "+*" and i > j:  # commutative: one order is enough
                continue
            combined = _combine(items[i], items[j], op)
            if combined is None:
                continue
            found = _search([combined] + rest, target, operators)
            if found is not None:
                return found
    return None


class Countdown:
    """The Countdown task (sparse reward: 1 for a correct expression, else 0)."""

    name = "countdown"

    def __init__(self, config: CountdownConfig | None = None) -> None:
        self.config = config or CountdownConfig()

    def _random_target(self, rng: random.Random, numbers: list[int]) -> int | None:
        cfg = self.config
        used = numbers if cfg.use_all else rng.sample(numbers, rng.randint(2, len(numbers)))
        items = [(Fraction(n), str(n), 3) for n in rng.sample(used, len(used))]
        while len(items) > 1:
            i, j = rng.sample(range(len(items)), 2)
            combined = _combine(items[i], items[j], rng.choice(cfg.operators))
            if combined is None:
                return None
            items = [items[k] for k in range(len(items)) if k not in (i, j)] + [combined]
        value = items[0][0]
        if value.denominator != 1 or not 1 <= value <= cfg.max_target:
            return None
        return int(value)

    def make_problem(self, numbers: list[int], target: int) -> Problem:
        listed = " ".join(map(str, numbers))
        instruction = (
            f"Using the numbers {listed}, each at most once, with + - * / and parentheses, "
            f"write an expression that equals {target}. "
            "Give only the expression inside <answer></answer>, for example <answer>(1+2)*3</answer>."
        )
        return Problem(
            prompt=f"{','.join(map(str, numbers))}>{target}=",
            instruction=instruction,
            answer=str(target),
            data={"numbers": list(numbers), "target": target},
        )

    def problems(self, split: str, count: int, seed: int) -> list[Problem]:
        rng = random.Random(split_seed(split, seed))
        out = []
        while len(out) < count:
            numbers = [rng.randint(1, self.config.max_number) for _ in range(self.config.num_numbers)]
            target = self._random_target(rng, numbers)
            if target is not None:
                out.append(self.make_problem(numbers, target))
        return out

    def verify(self, answer: str, numbers: list[int], target: int) -> tuple[bool, bool]:
        """(well-formed with allowed numbers, equals target). Never raises, never evaluates code."""
        try:
            parsed = parse_expression(answer)
        except (ExpressionError, RecursionError, MemoryError):
            return False, False
        allowed = not (Counter(parsed.literals) - Counter(numbers))
        return allowed, allowed and parsed.value == target

    def score(self, completion: str, problem: Problem) -> float:
        well_formed, correct = self.verify(
            extract_answer(completion), problem.data["numbers"], problem.data["target"]
        )
        if correct:
            return 1.0
        return self.config.format_reward if well_formed else 0.0

    def demonstration(self, problem: Problem) -> str | None:
        return solve(problem.data["numbers"], problem.data["target"])
