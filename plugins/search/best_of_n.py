"""Best-of-N: sample N whole solutions from the question, score them, keep the best.

Verifier reranking as in Cobbe et al., 2021, "Training Verifiers to Solve Math Word Problems"
(arXiv 2110.14168), the baseline of the A*-decoding and particle-filtering papers.

Parameters: ``n`` (samples); ``selection``: ``argmax`` (default) keeps the highest score, ties
going to the earliest sample (lowest index), so the choice is deterministic; ``softmax`` draws
one sample from ``softmax(score / temperature)`` with a generator seeded from the run seed —
the best-of-k selection by softmax used with LLM-as-a-judge scores, where a judge's near-ties
are noise (``temperature`` 0 is the argmax). Unfinished samples (cut by the length limit)
compete only when no finished sample exists.

Any scorer plugs in: ``answer_match`` (the core's default), ``step_checker`` (the fraction of
the written arithmetic that is right) or ``llm_judge`` (a judge model's P("Yes")).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, Expansion, Node, hookimpl

from .weights import softmax_select

if TYPE_CHECKING:
    from orchestrator import RunContext


class BestOfNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(8, ge=1)
    selection: Literal["argmax", "softmax"] = "argmax"
    temperature: float = Field(1.0, ge=0.0)


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
        if self.config.selection == "argmax":
            return pick_best(self._candidates)
        pool = _pool(self._candidates)
        if not pool:
            return None
        rng = random.Random(ctx.seed_for(ctx.root.id, len(pool)))
        scores = [c.score for c in pool if c.score is not None]
        return pool[softmax_select(scores, self.config.temperature, rng)]


def _pool(candidates: Sequence[Node]) -> list[Node]:
    scored = [c for c in candidates if c.score is not None]
    finished = [c for c in scored if getattr(c.attrs, "finished", False)]
    return finished or scored


def pick_best(candidates: Sequence[Node]) -> Node | None:
    """Highest score among finished candidates (else among all); earliest wins ties."""
    pool = _pool(candidates)
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
