"""Final-answer extraction and matching, including what a real model leaves in its text."""

from __future__ import annotations

import pytest
from orchestrator.plugins.scorers.answers import (
    answer_key,
    answers_match,
    extract_answer,
    has_final_answer,
)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So 9 * 2 = 18.\n#### 18", "18"),
        ("#### 16<|im_end|>", "16"),
        ("#### $15 marbles", "15"),
        ("#### 1,200.", "1200"),
        ("#### 2/3", "2/3"),
        ("the total is \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("The answer is: 15<|im_end|>", "15"),
        ("#### <|im_end|>", None),  # nothing stated after the marker (no fallback)
        ("He has 7 apples.", None),
    ],
)
def test_extract_marked_answers(text: str, answer: str | None) -> None:
    assert extract_answer(text, fallback_last_number=False) == answer


def test_fallback_last_number_and_final_answer_marker() -> None:
    assert extract_answer("He has 7 apples.") == "7"
    assert extract_answer("Total 12 apples. #### <|im_end|>") == "12"
    assert has_final_answer("#### 18") and not has_final_answer("#### <|im_end|>")


def test_keys_and_matching() -> None:
    assert answer_key("7.0") == answer_key("$7") == "7"
    assert answer_key(".5") == answer_key("0.50") == "0.5"
    assert answer_key("x+1") == "x+1"
    assert answers_match("1,000", "1000") and answers_match("0.5", ".5")
    assert not answers_match(None, "5") and not answers_match("5", "6")
