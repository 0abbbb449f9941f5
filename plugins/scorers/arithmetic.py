"""The arithmetic a solution writes: find its equations and check them.

Two forms are recognised, in this order:

- GSM8K calculator annotations, ``<<16-3-4=9>>``;
- plain equations in the text, ``16 - 3 - 4 = 9``, ``9 * 2 = $18``, ``2 x 3 = 6``,
  ``80,000*1.5=120,000``, chains such as ``2 + 3 = 5 = 5``.

Numbers may carry ``$`` and thousands separators; ``%`` means "divided by 100"; ``×``, ``x``,
``·`` are multiplication, ``÷`` division, ``−`` minus. Each ``=`` whose sides include at least one
operator is one *check*; identical checks (after removing spaces, ``$`` and commas) count once,
so ``16 - 3 - 4 = <<16-3-4=9>>9`` is one check, not two. A stated value may be rounded: the
check passes when the computed value rounds to it at the decimals it was written with
(``10 / 3 = 3.33``; an integer is never a rounding). Division by zero is a failed check.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import NamedTuple

__all__ = ["Check", "evaluate", "find_checks"]

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?|\.\d+%?"
_TERM = rf"[(\s]*[-−]?\s*\$?\s*(?:{_NUM})[)\s]*"
_OP = r"[-+*/×÷x·−]"
_EXPR = rf"{_TERM}(?:{_OP}{_TERM})*"
_EQUATION = re.compile(rf"(?<![\w.,$]){_EXPR}(?:={_EXPR})+(?![\w.,]*\d)")
_ANNOTATION = re.compile(r"<<([^<>]*)>>")
_TOKEN = re.compile(rf"\s*(?:(?P<num>{_NUM})|(?P<op>[-+*/()]))")
_CANONICAL_OPS = str.maketrans({"×": "*", "x": "*", "·": "*", "÷": "/", "−": "-"})


class Check(NamedTuple):
    """One ``left = right`` the text states, and whether it holds."""

    left: str
    right: str
    correct: bool


def find_checks(text: str) -> list[Check]:
    """Every distinct arithmetic check ``text`` writes, in order of appearance."""
    checks: list[Check] = []
    seen: set[tuple[str, str]] = set()
    for match in _ANNOTATION.finditer(text):
        _add_chain(match.group(1), checks, seen)
    plain = _ANNOTATION.sub("", text)
    for match in _EQUATION.finditer(plain):
        _add_chain(match.group(0), checks, seen)
    return checks


def _add_chain(equation: str, checks: list[Check], seen: set[tuple[str, str]]) -> None:
    sides = [_canonical(side) for side in equation.split("=")]
    for left, right in itertools.pairwise(sides):
        if not left or not right or not (_has_operator(left) or _has_operator(right)):
            continue
        if (left, right) in seen:
            continue
        seen.add((left, right))
        checks.append(Check(left, right, _holds(left, right)))


def _canonical(side: str) -> str:
    return side.translate(_CANONICAL_OPS).replace("$", "").replace(",", "").replace(" ", "").strip()


def _has_operator(side: str) -> bool:
    # A leading minus is a sign, not an operation.
    return any(op in side[1:] for op in "+-*/") or "%" in side


def _holds(left: str, right: str) -> bool:
    try:
        a, b = evaluate(left), evaluate(right)
    except (ZeroDivisionError, ValueError):
        return False
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
        return True
    # A stated number with decimals may be rounded: compare at the decimals it was written with.
    for stated, computed, text in ((b, a, right), (a, b, left)):
        if "." in text and not _has_operator(text):
            decimals = len(text.split(".")[1].rstrip("%"))
            if abs(computed - stated) <= 0.5 * 10**-decimals + 1e-12:
                return True
    return False


def evaluate(expression: str) -> float:
    """The value of ``expression`` (numbers, ``+ - * /``, parentheses, unary minus, ``%``).

    :raises ValueError: if it is not such an expression.
    :raises ZeroDivisionError: if it divides by zero.
    """
    tokens = _tokenize(expression.translate(_CANONICAL_OPS).replace("$", "").replace(",", ""))
    value, position = _sum(tokens, 0)
    if position != len(tokens):
        raise ValueError(f"unexpected {tokens[position]!r} in {expression!r}")
    return value


def _tokenize(expression: str) -> list[str]:
    tokens, position = [], 0
    expression = expression.strip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot read {expression[position:]!r}")
        tokens.append(match.group("num") or match.group("op"))
        position = match.end()
        while position < len(expression) and expression[position].isspace():
            position += 1
    return tokens


def _sum(tokens: list[str], position: int) -> tuple[float, int]:
    value, position = _product(tokens, position)
    while position < len(tokens) and tokens[position] in "+-":
        op = tokens[position]
        right, position = _product(tokens, position + 1)
        value = value + right if op == "+" else value - right
    return value, position


def _product(tokens: list[str], position: int) -> tuple[float, int]:
    value, position = _unary(tokens, position)
    while position < len(tokens) and tokens[position] in "*/":
        op = tokens[position]
        right, position = _unary(tokens, position + 1)
        value = value * right if op == "*" else value / right
    return value, position


def _unary(tokens: list[str], position: int) -> tuple[float, int]:
    if position >= len(tokens):
        raise ValueError("expression ends early")
    token = tokens[position]
    if token == "-":
        value, position = _unary(tokens, position + 1)
        return -value, position
    if token == "(":
        value, position = _sum(tokens, position + 1)
        if position >= len(tokens) or tokens[position] != ")":
            raise ValueError("unbalanced parenthesis")
        return value, position + 1
    if token in "+*/)":
        raise ValueError(f"unexpected {token!r}")
    if token.endswith("%"):
        return float(token[:-1]) / 100, position + 1
    return float(token), position + 1
