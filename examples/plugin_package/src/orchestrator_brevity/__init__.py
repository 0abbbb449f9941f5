"""The ``brevity`` scorer: among candidates that state a final answer, prefer the shortest.

Score = 1 / (1 + words / max_words) for a candidate with an answer, 0 without one. A
third-party plugin needs nothing but this module and its entry point.
"""

from __future__ import annotations

from typing import Any

from orchestrator.plugins.scorers.answers import extract_answer
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, ScoreBatch, hookimpl


class BrevityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_words: int = Field(100, ge=1)


class BrevityScorer:
    def __init__(self, config: BrevityConfig) -> None:
        self.config = config

    async def score(self, batch: ScoreBatch, ctx: Any) -> list[float]:
        scores = []
        for candidate in batch.candidates:
            if extract_answer(candidate.text, fallback_last_number=False) is None:
                scores.append(0.0)
            else:
                words = len(candidate.text.split())
                scores.append(1.0 / (1.0 + words / self.config.max_words))
        return scores


@hookimpl
def orchestrator_add_scorers() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="brevity",
            factory=BrevityScorer,
            config_model=BrevityConfig,
            description="prefer the shortest candidate that states a final answer",
        )
    ]
