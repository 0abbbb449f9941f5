"""Self-consistency: sample N solutions, answer with the most frequent final answer.

Wang et al., 2023, "Self-Consistency Improves Chain of Thought Reasoning in Language Models"
(arXiv 2203.11171): sample diverse reasoning paths and marginalise them out by a plurality
vote over their final answers.

Parameters: ``n`` (samples, default 8); ``weighted`` (default False): weight each vote by the
scorer's score for the sample (the paper's weighted variants; the unweighted vote is the one
it recommends); ``fallback_last_number`` (default True): a sample that marks no answer votes
for its last number.

Unspecified by the paper, chosen here: answers are compared by value (:func:`answer_key`);
samples with no answer, or unfinished (cut by the length limit), do not vote; a tie goes to
the answer that appeared first among the samples (sample order is the order of the children,
fixed by the run), and the returned node is the first sample that gave the winning answer.
The paper's own tie-break is unstated; its_hub breaks ties at random.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, Expansion, Node, hookimpl

from ..scorers.answers import answer_key, extract_answer
from ..scorers.majority_vote import majority, tally

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["SelfConsistency", "SelfConsistencyConfig"]


class SelfConsistencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(8, ge=1)
    weighted: bool = False
    fallback_last_number: bool = True


class SelfConsistency:
    def __init__(self, config: SelfConsistencyConfig) -> None:
        self.config = config
        self._samples: list[Node] = []
        self._expanded = False

    def select(self, ctx: RunContext) -> Sequence[Expansion]:
        if self._expanded:
            return []
        self._expanded = True
        return [Expansion(node_id=ctx.root.id, num_children=self.config.n, until="solution")]

    def observe(self, ctx: RunContext, children: Sequence[Node]) -> None:
        self._samples.extend(children)
        answers = self._answers()
        votes = tally(answers, self._weights())
        for node, answer in zip(self._samples, answers, strict=True):
            if answer is not None:
                node.attrs.stats["votes"] = votes[answer_key(answer)]  # type: ignore[union-attr]
        ctx.meta["search"] = {"strategy": "self_consistency", "votes": votes}

    def done(self, ctx: RunContext) -> bool:
        return self._expanded

    def best(self, ctx: RunContext) -> Node | None:
        answers = self._answers()
        winner = majority(answers, self._weights())
        if winner is None:
            return None
        return next(
            node
            for node, answer in zip(self._samples, answers, strict=True)
            if answer is not None and answer_key(answer) == winner
        )

    def _answers(self) -> list[str | None]:
        answers: list[str | None] = []
        for node in self._samples:
            finished = bool(getattr(node.attrs, "finished", False))
            # Samples are whole solutions grown from the question: the node's text is the path.
            answer = extract_answer(
                node.text, fallback_last_number=self.config.fallback_last_number
            )
            answers.append(answer if finished else None)
        return answers

    def _weights(self) -> list[float] | None:
        if not self.config.weighted:
            return None
        return [node.score or 0.0 for node in self._samples]


@hookimpl
def orchestrator_add_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="self_consistency",
            factory=SelfConsistency,
            config_model=SelfConsistencyConfig,
            description="sample N solutions, answer by majority vote over their final answers",
        )
    ]
