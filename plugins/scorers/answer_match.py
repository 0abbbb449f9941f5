"""The answer-match scorer: is the candidate's final answer the reference answer?

With a reference (``RunConfig.reference``): 1.0 when the extracted answer matches it (exact
after normalisation, or numerically equal), else 0.0. Without one it can only check form:
``no_reference_score`` (default 1.0) when the candidate states an answer, 0.0 otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, ScoreBatch, hookimpl

from .answers import answers_match, extract_answer

if TYPE_CHECKING:
    from orchestrator import RunContext


class AnswerMatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Accept the last number in the text as the answer when nothing is marked.
    fallback_last_number: bool = True
    no_reference_score: float = Field(1.0, ge=0.0, le=1.0)


class AnswerMatchScorer:
    def __init__(self, config: AnswerMatchConfig) -> None:
        self.config = config

    async def score(self, batch: ScoreBatch, ctx: RunContext) -> list[float]:
        scores = []
        for candidate in batch.candidates:
            answer = extract_answer(
                candidate.text, fallback_last_number=self.config.fallback_last_number
            )
            if batch.reference is None:
                scores.append(self.config.no_reference_score if answer is not None else 0.0)
            else:
                scores.append(1.0 if answers_match(answer, batch.reference) else 0.0)
        return scores


@hookimpl
def orchestrator_add_scorers() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="answer_match",
            factory=AnswerMatchScorer,
            config_model=AnswerMatchConfig,
            description="1 if the extracted final answer matches the reference answer",
        )
    ]
