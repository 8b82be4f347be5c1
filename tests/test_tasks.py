"""Tasks: the bounded parser, Countdown generation/solver/verifier, arithmetic, user data."""

import json
import time

import pytest

from mhpo.tasks import (
    Arithmetic, ArithmeticConfig, Countdown, CountdownConfig, ExpressionError, UserData, UserDataConfig,
    extract_answer, parse_expression, solve,
)  # fmt: skip
from mhpo.tasks.base import Problem


@pytest.mark.parametrize(
    "text, value, literals",
    [("1+2*3", 7, (1, 2, 3)), ("(1+2)*3", 9, (1, 2, 3)), ("8/3*3", 8, (8, 3, 3)), (" 10 - 4 - 3 ", 3, (10, 4, 3))],
)
def test_parser_values(text, value, literals):
    parsed = parse_expression(text)
    assert parsed.value == value and parsed.literals == literals


HOSTILE = [
    "__import__('os').system('true')",
    "9**9**9",
    "1" * 100_000,
    "(" * 5000 + "1" + ")" * 5000,
    "((1+2)",
    "1+2)",
    "5/0",
    "3/(2-2)",
    "",
    "-3+5",
    "1e9",
    "0x10",
    "3 5",
    "lambda: 1",
    "\x00",
    "(((((((((((((((((((((((((((((((((((1)))))))))))))))))))))))))))))))))))",
    "99999999999999*99999999999999",
]


@pytest.mark.parametrize("answer", HOSTILE)
def test_hostile_countdown_answers_score_zero_quickly(answer):
    task = Countdown()
    problem = task.make_problem([3, 5, 2], 16)
    start = time.perf_counter()
    assert task.score(answer, problem) == 0.0
    assert task.score(f"<answer>{answer}</answer>", problem) == 0.0
    assert time.perf_counter() - start < 1.0  # bounded work, not a timing benchmark: a hang fails
    with pytest.raises(ExpressionError):
        parse_expression(answer)


def test_countdown_verifier_rules():
    task = Countdown()
    problem = task.make_problem([3, 5, 2], 16)
    assert task.score("(3+5)*2", problem) == 1.0
    assert task.score("<answer>2*(5+3)</answer>", problem) == 1.0
    assert task.score("(3+3)*2", problem) == 0.0  # 3 used twice
    assert task.score("(3+5)*4", problem) == 0.0  # 4 not given
    assert task.score("3+5", problem) == 0.0  # wrong value
    graded = Countdown(CountdownConfig(format_reward=0.1))
    assert graded.score("3+5", problem) == 0.1 and graded.score("3+x", problem) == 0.0


def test_countdown_generation_is_seeded_solvable_and_split():
    task = Countdown(CountdownConfig(num_numbers=4, operators="+-*/"))
    a, b = task.problems("train", 50, seed=3), task.problems("train", 50, seed=3)
    assert a == b
    assert a != task.problems("train", 50, seed=4)
    for problem in a:
        demo = task.demonstration(problem)
        assert demo is not None and task.score(demo, problem) == 1.0
        assert 1 <= problem.data["target"] <= task.config.max_target


def test_solver_finds_known_solution_and_reports_none():
    assert parse_expression(solve([3, 5, 2], 16)).value == 16
    assert solve([1, 1], 100) is None


def test_arithmetic_task():
    task = Arithmetic(ArithmeticConfig(num_operands=3, max_operand=9))
    problems = task.problems("train", 20, seed=0)
    for p in problems:
        assert task.score(task.demonstration(p), p) == 1.0
        assert task.score(str(int(p.answer) + 1), p) == 0.0
    p = Problem("2+3*4=", "", "14")
    assert task.score("14", p) == 1.0 and task.score("<answer>14</answer>", p) == 1.0 and task.score("1" * 50, p) == 0.0


def test_arithmetic_number_format_scores_the_last_integer():
    task = Arithmetic(ArithmeticConfig(num_operands=2, max_operand=20, operators="+-", answer_format="number"))
    (problem,) = task.problems("eval", 1, seed=0)
    expression = problem.prompt[:-1]
    assert problem.instruction == f"What is {expression}? Reply with only the number."
    right, wrong = problem.answer, str(int(problem.answer) + 1)
    assert task.score(f"{expression} = {right}\n", problem) == 1.0
    assert task.score(f"The answer is {right}, since {expression} = {wrong}", problem) == 0.0  # the last one counts
    assert task.score(f"<answer>{right}</answer> or maybe {wrong}", problem) == 1.0  # a tag wins
    assert task.score("no digits", problem) == 0.0 and task.score("9" * 5000, problem) == 0.0
    with pytest.raises(ValueError, match="answer_format must be one of tag, number"):
        ArithmeticConfig(answer_format="last")


def test_extract_answer():
    assert extract_answer("think... <answer> 3+4 </answer> more") == "3+4"
    assert extract_answer("3+4\nnoise") == "3+4"


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_userdata_math_verify_and_custom_reward(tmp_path, monkeypatch):
    data = tmp_path / "data.jsonl"
    _write_jsonl(data, [{"question": f"What is {i}+{i}?", "solution": str(2 * i)} for i in range(20)])
    task = UserData(UserDataConfig(str(data), prompt_field="question", answer_field="solution"))
    problem = task.problems("eval", 1, seed=0)[0]
    assert task.score(f"The answer is $\\boxed{{{problem.answer}}}$", problem) == 1.0
    assert task.score("The answer is $\\boxed{12345}$", problem) == 0.0
    assert task.score("}}}{{{\\frac", problem) == 0.0

    module = tmp_path / "my_reward.py"
    module.write_text("def reward(completion, answer, prompt):\n    return float(answer in completion)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    custom = UserData(UserDataConfig(str(data), "question", "solution", reward_fn="my_reward:reward"))
    assert custom.score(problem.answer, problem) == 1.0


def test_userdata_errors(tmp_path):
    data = tmp_path / "data.jsonl"
    _write_jsonl(data, [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}])
    with pytest.raises(ValueError, match="row 1 has no field 'question'"):
        UserData(UserDataConfig(str(data), prompt_field="question"))
    with pytest.raises(ValueError, match="module:function"):
        UserData(UserDataConfig(str(data), reward_fn="nonsense"))
    with pytest.raises(ValueError, match="cannot import reward module"):
        UserData(UserDataConfig(str(data), reward_fn="no_such_module_xyz:f"))
