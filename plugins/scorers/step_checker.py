"""The rule-based step checker: a process reward from the arithmetic a solution writes.

A stand-in for a learned PRM (the particle-filtering and A*-decoding papers use
Qwen2.5-Math-PRM / Llama PRMs) that needs no model: it finds every equation the text states
(``16 - 3 - 4 = 9``, ``<<16-3-4=9>>``; see :mod:`.arithmetic`), recomputes it, and scores the
fraction that is right. Text with nothing to check gets ``neutral_score``.

Parameters:

- ``neutral_score`` (default 0.5): the score of a text that writes no arithmetic — the
  "don't know" prior, so an unchecked step neither rewards nor punishes a path.
- ``scope``: ``"path"`` (default) checks everything written from the question to this node,
  so a wrong step keeps weighing on the path after it (as a PRM conditioned on the prefix
  would); ``"step"`` checks only the newest step (the literal per-step reading).

Not specified anywhere, chosen here: identical equations count once; a result written with
decimals may be rounded, an integer may not; division by zero is a wrong check; the final
answer itself is not checked (that needs a reference: see ``answer_match``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, ScoreBatch, hookimpl

from .arithmetic import find_checks

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["StepChecker", "StepCheckerConfig", "check_score"]


class StepCheckerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    neutral_score: float = Field(0.5, ge=0.0, le=1.0)
    scope: Literal["path", "step"] = "path"


def check_score(text: str, neutral_score: float = 0.5) -> float:
    """The fraction of the arithmetic checks in ``text`` that hold (``neutral_score`` if none)."""
    checks = find_checks(text)
    if not checks:
        return neutral_score
    return sum(check.correct for check in checks) / len(checks)


class StepChecker:
    def __init__(self, config: StepCheckerConfig) -> None:
        self.config = config

    async def score(self, batch: ScoreBatch, ctx: RunContext) -> list[float]:
        path = self.config.scope == "path"
        return [
            check_score(c.text if path else (c.step or c.text), self.config.neutral_score)
            for c in batch.candidates
        ]


@hookimpl
def orchestrator_add_scorers() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="step_checker",
            factory=StepChecker,
            config_model=StepCheckerConfig,
            description="fraction of the arithmetic written on the path that is right",
        )
    ]
