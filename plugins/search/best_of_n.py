"""Best-of-N: sample N whole solutions from the question, score them, keep the best.

Parameters: ``n`` (samples). Ties in score go to the earliest sample (lowest index), so the
choice is deterministic. Unfinished samples (cut by the length limit) compete only when no
finished sample exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, Expansion, Node, hookimpl

if TYPE_CHECKING:
    from orchestrator import RunContext


class BestOfNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(8, ge=1)


class BestOfN:
    def __init__(self, config: BestOfNConfig) -> None:
        self.config = config
        self._candidates: list[Node] = []
        self._expanded = False

    def select(self, ctx: RunContext) -> Sequence[Expansion]:
        if self._expanded:
            return []
        self._expanded = True
        return [Expansion(node_id=ctx.root.id, num_children=self.config.n, until="solution")]

    def observe(self, ctx: RunContext, children: Sequence[Node]) -> None:
        self._candidates.extend(children)

    def done(self, ctx: RunContext) -> bool:
        return self._expanded

    def best(self, ctx: RunContext) -> Node | None:
        return pick_best(self._candidates)


def pick_best(candidates: Sequence[Node]) -> Node | None:
    """Highest score among finished candidates (else among all); earliest wins ties."""
    scored = [c for c in candidates if c.score is not None]
    finished = [c for c in scored if getattr(c.attrs, "finished", False)]
    pool = finished or scored
    if not pool:
        return None
    return max(enumerate(pool), key=lambda item: (item[1].score, -item[0]))[1]


@hookimpl
def orchestrator_add_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="best_of_n",
            factory=BestOfN,
            config_model=BestOfNConfig,
            description="sample N solutions, keep the highest-scoring one",
        )
    ]
