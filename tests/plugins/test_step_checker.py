"""The arithmetic finder and the rule-based step checker, on GSM8K-style solutions."""

from __future__ import annotations

import pytest
from orchestrator.plugins.scorers.arithmetic import Check, evaluate, find_checks
from orchestrator.plugins.scorers.step_checker import StepChecker, StepCheckerConfig, check_score

from orchestrator import Candidate, ScoreBatch

# The first GSM8K dev solution, verbatim: each computation is written twice (text + annotation).
JANET = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n#### 18"
)
HOUSE = (
    "The cost of the house and repairs came out to 80,000+50,000=$<<80000+50000=130000>>130,000\n"
    "He increased the value of the house by 80,000*1.5=<<80000*1.5=120000>>120,000\n"
    "So the new value of the house is 120,000+80,000=$<<120000+80000=200000>>200,000\n"
    "So he made a profit of 200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70000"
)


def test_gsm8k_annotations_and_text_count_once() -> None:
    assert find_checks(JANET) == [Check("16-3-4", "9", True), Check("9*2", "18", True)]
    assert check_score(JANET) == 1.0


def test_thousands_separators_and_dollars() -> None:
    assert [c.correct for c in find_checks(HOUSE)] == [True, True, True, True]
    assert find_checks(HOUSE)[1] == Check("80000*1.5", "120000", True)


def test_a_wrong_step_lowers_the_fraction() -> None:
    text = "She has 16 - 3 - 4 = 9 eggs.\n\nShe makes 9 * 2 = $20.\n\n#### 20"
    assert find_checks(text) == [Check("16-3-4", "9", True), Check("9*2", "20", False)]
    assert check_score(text) == 0.5


def test_wrong_annotation_inside_right_text() -> None:
    text = "He sprints 3*3=<<3*3=10>>9 times"
    assert find_checks(text) == [Check("3*3", "10", False), Check("3*3", "9", True)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 x 3 = 6 and 3 × 4 = 13", [True, False]),
        ("10 / 3 = 3.33", [True]),
        ("10 / 3 = 3", [False]),  # an integer result is not a rounding
        ("(2 + 3) * 4 = 20", [True]),
        ("50% * 10 = 5", [True]),
        ("1/0 = 5", [False]),
        ("3 + 4 = 7 + 1 = 8", [False, True]),  # a running total written as a chain is wrong
        ("5 − 7 = −2", [True]),
        ("In 2023, 5+5=10, and 3,000 - 1,000 = 2,000.", [True, True]),
        ("x = 5, so the answer is 5", []),
        ("7 = 7", []),  # no operation: nothing to check
    ],
)
def test_equation_forms(text: str, expected: list[bool]) -> None:
    assert [c.correct for c in find_checks(text)] == expected


def test_evaluate_precedence_and_errors() -> None:
    assert evaluate("2+3*4") == 14.0
    assert evaluate("-(2+3)*4") == -20.0
    assert evaluate("$1,200 / 4") == 300.0
    with pytest.raises(ValueError, match="unbalanced parenthesis"):
        evaluate("(2+3")
    with pytest.raises(ZeroDivisionError):
        evaluate("1/0")


def test_nothing_to_check_gets_the_neutral_prior() -> None:
    assert check_score("Let me think about the eggs.") == 0.5
    assert check_score("Let me think about the eggs.", neutral_score=0.2) == 0.2


async def test_scorer_scopes() -> None:
    batch = ScoreBatch(
        question="q",
        candidates=[
            Candidate(text="2 + 2 = 5\n\nSo we add.\n\n", step="So we add.\n\n", finished=False),
            Candidate(text="2 + 2 = 4\n\n4 * 3 = 12\n\n", step="4 * 3 = 12\n\n", finished=False),
        ],
    )
    path = StepChecker(StepCheckerConfig())
    step = StepChecker(StepCheckerConfig(scope="step", neutral_score=0.3))
    assert await path.score(batch, None) == [0.0, 1.0]  # type: ignore[arg-type]
    assert await step.score(batch, None) == [0.3, 1.0]  # type: ignore[arg-type]
