"""A small, bounded parser for integer arithmetic: the only way model output is evaluated.

Model output is untrusted input. Nothing here calls eval or exec: the text is tokenised
against a whitelist (integers, + - * /, parentheses, spaces), parsed by recursive descent
with a length and a nesting bound, and evaluated exactly with fractions. Every failure is a
:class:`ExpressionError`, which scorers turn into reward 0.

Grammar::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := INTEGER | "(" expr ")"
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

MAX_CHARS = 256
MAX_DEPTH = 32
MAX_DIGITS = 12


class ExpressionError(ValueError):
    """The text is not a valid, bounded integer expression (or divides by zero)."""


@dataclasses.dataclass(frozen=True)
class Parsed:
    value: Fraction
    literals: tuple[int, ...]  # the integers the expression uses, in order


def _tokenise(text: str) -> list[str]:
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"expression longer than {MAX_CHARS} characters")
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "+-*/()":
            tokens.append(ch)
            i += 1
        elif "0" <= ch <= "9":
            j = i
            while j < len(text) and "0" <= text[j] <= "9":
                j += 1
            if j - i > MAX_DIGITS:
                raise ExpressionError(f"integer literal longer than {MAX_DIGITS} digits")
            tokens.append(text[i:j])
            i = j
        else:
            raise ExpressionError(f"character {ch!r} is not allowed")
    if not tokens:
        raise ExpressionError("empty expression")
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.literals: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("unexpected end of expression")
        self.pos += 1
        return token

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term(depth)
            value = value + right if op == "+" else value - right
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            right = self.factor(depth)
            if op == "*":
                value = value * right
            elif right == 0:
                raise ExpressionError("division by zero")
            else:
                value = value / right
        return value

    def factor(self, depth: int) -> Fraction:
        token = self.take()
        if token == "(":
            if depth >= MAX_DEPTH:
                raise ExpressionError(f"parentheses nested deeper than {MAX_DEPTH}")
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise ExpressionError("unbalanced parentheses")
            return value
        if token.isdigit():
            self.literals.append(int(token))
            return Fraction(int(token))
        raise ExpressionError(f"unexpected {token!r}")


def parse_expression(text: str) -> Parsed:
    """Parse and evaluate ``text`` exactly; raise :class:`ExpressionError` on anything else.

    >>> parse_expression("(3 + 5) * 2")
    Parsed(value=Fraction(16, 1), literals=(3, 5, 2))
    >>> try:
    ...     parse_expression("__import__('os')")
    ... except ExpressionError as error:
    ...     print(error)
    character '_' is not allowed
    """
    if not isinstance(text, str):
        raise ExpressionError("expression must be a string")
    parser = _Parser(_tokenise(text))
    value = parser.expr(0)
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()!r} after the expression")
    return Parsed(value, tuple(parser.literals))
