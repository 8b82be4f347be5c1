"""Tasks with verifiable rewards. Importing this package needs no torch."""

from .arithmetic import Arithmetic, ArithmeticConfig
from .base import Problem, Task, extract_answer
from .countdown import Countdown, CountdownConfig, solve
from .expr import ExpressionError, parse_expression
from .userdata import UserData, UserDataConfig, math_verify_reward

TASKS = ("countdown", "arithmetic", "userdata")

__all__ = [
    "TASKS", "Arithmetic", "ArithmeticConfig", "Countdown", "CountdownConfig", "ExpressionError", "Problem",
    "Task", "UserData", "UserDataConfig", "extract_answer", "math_verify_reward", "parse_expression", "solve",
]  # fmt: skip
