"""Step-level beam search over partial solutions, ranked by a process reward.

The PRM-guided beam search of Snell et al., 2024 ("Scaling LLM Test-Time Compute Optimally
can be More Effective than Scaling Model Parameters", arXiv 2408.03314) and its_hub's
``BeamSearch``, the deterministic baseline the particle-filtering paper compares against.

Each round every unfinished beam node is expanded by ``expansions_per_beam`` (k) sampled
steps; the new steps, plus the finished solutions already in the beam, are ranked by score and
exactly the top ``width`` are kept (fewer only when fewer exist). The search ends when every
node in the beam is finished (or a budget runs out); the answer is the highest-scoring
finished node of the beam, else the highest-scoring node of the beam.

Parameters: ``width`` (default 4), ``expansions_per_beam`` (default 2).

Unspecified by the sources, chosen here: the first round expands the question
``width × expansions_per_beam`` times, so every round samples the same number of steps; a
finished solution keeps its slot and competes with new steps by its score (its_hub's
behaviour), rather than leaving the beam; ties in score go to the node ranked earlier (beam
nodes before new steps, then in expansion order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, Expansion, Node, hookimpl

from .best_of_n import pick_best

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["BeamSearch", "BeamSearchConfig", "top_k"]


class BeamSearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(4, ge=1)
    expansions_per_beam: int = Field(2, ge=1)


def top_k(nodes: Sequence[Node], k: int) -> list[Node]:
    """The ``k`` highest-scoring nodes (unscored ones last), earlier first on ties."""
    ranked = sorted(
        enumerate(nodes),
        key=lambda item: (item[1].score is not None, item[1].score or 0.0, -item[0]),
        reverse=True,
    )
    return [node for _, node in ranked[:k]]


class BeamSearch:
    def __init__(self, config: BeamSearchConfig) -> None:
        self.config = config
        self.beam: list[Node] = []
        self._started = False
        self._history: list[list[str]] = []

    def select(self, ctx: RunContext) -> Sequence[Expansion]:
        config = self.config
        if not self._started:
            self._started = True
            count = config.width * config.expansions_per_beam
            return [Expansion(node_id=ctx.root.id, num_children=count, until="step")]
        return [
            Expansion(node_id=node.id, num_children=config.expansions_per_beam, until="step")
            for node in self.beam
            if not _finished(node)
        ]

    def observe(self, ctx: RunContext, children: Sequence[Node]) -> None:
        carried = [node for node in self.beam if _finished(node)]
        self.beam = top_k([*carried, *children], self.config.width)
        self._history.append([node.id for node in self.beam])
        ctx.meta["search"] = {"strategy": "beam", "beams": self._history}

    def done(self, ctx: RunContext) -> bool:
        return self._started and all(_finished(node) for node in self.beam)

    def best(self, ctx: RunContext) -> Node | None:
        return pick_best(self.beam)


def _finished(node: Node) -> bool:
    return bool(getattr(node.attrs, "finished", False))


@hookimpl
def orchestrator_add_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="beam",
            factory=BeamSearch,
            config_model=BeamSearchConfig,
            description="step-level beam search: keep the top-width steps by score each round",
        )
    ]
