"""Final-answer extraction and comparison, shared by scorers, strategies and the search graph.

Extraction order: the last ``\\boxed{...}``; the number after the last ``####``; the phrase
"the answer is X"; otherwise the last number in the text (only when ``fallback_last_number``).
Special-token markup a runtime may leave in the text (``<|im_end|>``) is ignored, and after
``####`` a leading number is the answer (``#### $15 marbles`` is ``15``).
"""

from __future__ import annotations

import math
import re

__all__ = ["answer_key", "answers_match", "extract_answer", "has_final_answer", "normalize_answer"]

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_LEADING_NUMBER = re.compile(r"\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)(?![\d/^])")
_SPECIAL = re.compile(r"<\|[^|<>\s]*\|>")


def extract_answer(text: str, *, fallback_last_number: bool = True) -> str | None:
    """The final answer stated in ``text``, normalised, or ``None``."""
    text = _SPECIAL.sub("", text)
    for pattern in (_BOXED, _HASHES, _ANSWER_IS):
        matches = pattern.findall(text)
        if matches:
            raw = matches[-1]
            number = _LEADING_NUMBER.match(raw) if pattern is _HASHES else None
            answer = normalize_answer(number.group(1) if number else raw)
            if answer:
                return answer
    if fallback_last_number:
        numbers = _NUMBER.findall(text)
        if numbers:
            return normalize_answer(numbers[-1])
    return None


def has_final_answer(text: str) -> bool:
    """Whether ``text`` states a final answer explicitly (boxed, ``####`` or "answer is")."""
    return extract_answer(text, fallback_last_number=False) is not None


def normalize_answer(answer: str) -> str:
    """Strip spaces, ``$``, trailing dots and thousands separators; ``7.0`` becomes ``7``."""
    cleaned = answer.strip().strip("$").strip().rstrip(".").replace(",", "")
    value = _as_number(cleaned)
    if value is not None and math.isfinite(value) and value == int(value):
        return str(int(value))
    return cleaned


def answers_match(candidate: str | None, reference: str | None, *, rel_tol: float = 1e-6) -> bool:
    """Exact match after normalisation, or numeric equality within ``rel_tol``."""
    if candidate is None or reference is None:
        return False
    a, b = normalize_answer(candidate), normalize_answer(reference)
    if a == b:
        return True
    x, y = _as_number(a), _as_number(b)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=rel_tol, abs_tol=1e-9)


def answer_key(answer: str) -> str:
    """A key under which equal answers collide: numbers by value (``.5``, ``0.50`` and
    ``$0.5`` share ``"0.5"``), anything else by its normalised text."""
    normalized = normalize_answer(answer)
    value = _as_number(normalized)
    if value is None or not math.isfinite(value):
        return normalized
    return format(value, ".12g")


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None
