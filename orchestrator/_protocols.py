"""Protocols of the async objects that registration hooks build.

Each is small: the executor and graphs call these per node. ``ctx`` is the run's
:class:`~orchestrator.RunContext` (runtimes, budget, graph, config).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from ._context import RunContext
    from ._graph import Node
    from ._runtime import GenerateRequest, Prompt, SequenceHandle

__all__ = [
    "Candidate",
    "Document",
    "Expansion",
    "Gate",
    "GateDecision",
    "Memory",
    "Retriever",
    "Router",
    "ScoreBatch",
    "Scorer",
    "SearchStrategy",
]


class Expansion(BaseModel):
    """A strategy's request: grow ``num_children`` children under ``node_id``, each one step
    (up to the step delimiter) or one whole solution (until EOS / the answer pattern)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str
    num_children: int = Field(1, ge=1)
    until: Literal["step", "solution"] = "step"


class SearchStrategy(Protocol):
    """Decides what the ``search`` graph expands, and when it is done.

    The graph loop: ``select`` → the graph expands (generates and scores the children,
    concurrently) → ``observe`` → repeat until ``done``; then ``best`` is the answer node.
    Nodes in the run graph are ``kind="search"`` with :class:`SearchAttrs`; ``node.score``
    holds the scorer's value for the node's path.
    """

    def select(self, ctx: RunContext) -> Sequence[Expansion]:
        """The frontier nodes to expand this round (empty: nothing left to expand)."""
        ...

    def observe(self, ctx: RunContext, children: Sequence[Node]) -> None:
        """Take the scored children of this round (keep, prune, resample, backpropagate)."""
        ...

    def done(self, ctx: RunContext) -> bool: ...

    def best(self, ctx: RunContext) -> Node | None:
        """The node whose path is the final answer (None: no finished candidate)."""
        ...


class Candidate(BaseModel):
    """One thing to score: the full text of a path, its latest step, whether it is finished."""

    model_config = ConfigDict(extra="forbid")

    text: str
    step: str = ""
    finished: bool = True
    node_id: str | None = None


class ScoreBatch(BaseModel):
    """Candidates scored together (a scorer may use the set, e.g. majority vote)."""

    model_config = ConfigDict(extra="forbid")

    question: str
    candidates: list[Candidate]
    reference: str | None = None


class Scorer(Protocol):
    """Scores steps or whole candidates in [0, 1]; higher is better."""

    async def score(self, batch: ScoreBatch, ctx: RunContext) -> list[float]:
        """One score per candidate, in order."""
        ...


class Router(Protocol):
    """Picks the runtime (by name) for one generation; may probe a runtime first."""

    async def route(self, request: GenerateRequest, node: Node, ctx: RunContext) -> str: ...


class Memory(Protocol):
    """Builds a generation's context, and may act on a live sequence (prune, summarise)."""

    async def context(self, node: Node, ctx: RunContext) -> Prompt:
        """The prompt for generating ``node`` (from its ancestors, as the memory sees fit)."""
        ...

    async def observe(
        self, node: Node, ctx: RunContext, handle: SequenceHandle | None = None
    ) -> None:
        """Called when ``node`` finished; may edit ``handle``'s KV (e.g. drop a range)."""
        ...


class GateDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    escalate: bool
    reason: str = ""
    confidence: float | None = None


class Gate(Protocol):
    """Decides whether a fast answer must be escalated to a slow path."""

    async def decide(self, node: Node, ctx: RunContext) -> GateDecision: ...


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    text: str
    score: float = 0.0


class Retriever(Protocol):
    async def retrieve(self, query: str, k: int = 3) -> list[Document]: ...
