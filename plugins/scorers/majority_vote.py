"""Majority vote as a scorer: each candidate scores the share of the batch that agrees with it.

Self-consistency (Wang et al., 2023, "Self-Consistency Improves Chain of Thought Reasoning in
Language Models", arXiv 2203.11171) marginalises over reasoning paths by voting on their final
answers. As a scorer it sees the batch as a set: a candidate's score is the number of
candidates whose extracted answer equals its own (:func:`answer_key`: ``7``, ``7.0`` and
``$7`` agree) divided by the batch size; a candidate with no answer scores 0 and still counts
in the denominator. So scores are in [0, 1] and the majority's members share the top score.

Parameters: ``fallback_last_number`` (default True): take the last number of an answer that
marks none (``####``, ``\\boxed{}``, "the answer is").

:func:`tally` and :func:`majority` are the vote itself, shared with the self-consistency
strategy; ties go to the answer that appeared first (the paper leaves ties open).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from orchestrator import ComponentSpec, ScoreBatch, hookimpl

from .answers import answer_key, extract_answer

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["MajorityVote", "MajorityVoteConfig", "majority", "tally"]


class MajorityVoteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fallback_last_number: bool = True


def tally(
    answers: Sequence[str | None], weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Votes per answer key, in order of each answer's first appearance (``None``: no vote).

    :param weights: one weight per answer (default 1 each).
    :raises ValueError: if ``weights`` has a different length.
    """
    if weights is None:
        weights = [1.0] * len(answers)
    if len(weights) != len(answers):
        raise ValueError(f"{len(weights)} weights for {len(answers)} answers")
    votes: dict[str, float] = {}
    for answer, weight in zip(answers, weights, strict=True):
        if answer is not None:
            key = answer_key(answer)
            votes[key] = votes.get(key, 0.0) + weight
    return votes


def majority(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> str | None:
    """The answer key with the most votes; a tie goes to the one that appeared first."""
    votes = tally(answers, weights)
    if not votes:
        return None
    # max() keeps the first of equal maxima, and dicts keep first-appearance order.
    return max(votes, key=lambda key: votes[key])


class MajorityVote:
    def __init__(self, config: MajorityVoteConfig) -> None:
        self.config = config

    async def score(self, batch: ScoreBatch, ctx: RunContext) -> list[float]:
        answers = [
            extract_answer(c.text, fallback_last_number=self.config.fallback_last_number)
            for c in batch.candidates
        ]
        votes = tally(answers)
        size = len(batch.candidates)
        return [0.0 if a is None else votes[answer_key(a)] / size for a in answers]


@hookimpl
def orchestrator_add_scorers() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="majority_vote",
            factory=MajorityVote,
            config_model=MajorityVoteConfig,
            description="share of the batch whose final answer agrees with the candidate's",
        )
    ]
