"""The ``coat`` graph: Chain-of-Associated-Thoughts, MCTS over reasoning steps with an
associative memory per node.

CoAT (Pan et al., "Chain-of-Associated-Thoughts Framework for Enhancing LLMs Reasoning",
arXiv 2502.02390; no official code; methods.md §4) is the ``search`` graph configured with:

- the ``mcts`` strategy (UCT selection, expansion by K children, backpropagation,
  termination by a score threshold, depth D or budget: :mod:`orchestrator.plugins.search.mcts`);
- the ``associative`` memory: each new node gets a model-written memory, optionally grounded
  by a retriever (e.g. ``lexical`` BM25 over the user's documents), and the memories along a
  path go into its children's context (:mod:`orchestrator.plugins.memory.associative`);
- the ``coat_value`` scorer: ``V(n) = F_g(Q, G(n)) + β · F_a(Q, AM(n))``, a content scorer on
  the path and a memory scorer on the node's memory, both registered scorers (default: the
  ``llm_judge``, with a relevance question for the memory). A node without memory gets
  ``empty_memory_score`` (0) for it. Both parts are kept in ``node.scores`` (``content``,
  ``memory``); the outer scorer call counts one scorer call per node and the memory judge
  one more per node with a memory.

Each of these is an ordinary component, so a run can swap any of them
(``--strategy``, ``--scorer``, ``--memory`` settings, ``--set strategy.num_children=4``...).
Siblings are generated from the same prompt, token for token: a runtime with prefix
sharing computes the shared prefix once.

Unspecified by the paper, chosen here [unverified]: β = 0.5, the judge wordings, and the
defaults of MCTS and the memory (see their modules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.plugins.memory.associative import (
    DEFAULT_SYSTEM_PROMPT,
    AssociationAttrs,
    memory_of,
)
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import Candidate, ComponentSpec, GraphSpec, ScoreBatch, Scorer, hookimpl

from .search import SearchConfig, SearchGraph

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["CoATConfig", "CoATValue", "CoATValueConfig"]

MEMORY_JUDGE_TEMPLATE = (
    "Question:\n{question}\n\nRecalled knowledge:\n{solution}\n\n"
    "Is this knowledge correct and relevant for answering the question? Answer Yes or No."
)


class CoATConfig(SearchConfig):
    """The search graph's options with CoAT's components as defaults."""

    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    default_strategy: str = "mcts"
    default_scorer: str = "coat_value"
    default_memory: str | None = "associative"


class CoATValueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.5, ge=0.0)
    content_scorer: str = "llm_judge"
    content_options: dict[str, Any] = Field(default_factory=dict)
    memory_scorer: str = "llm_judge"
    memory_options: dict[str, Any] = Field(
        default_factory=lambda: {"template": MEMORY_JUDGE_TEMPLATE}
    )
    empty_memory_score: float = 0.0


class CoATValue:
    """``V = content score + β · memory score`` for each candidate."""

    def __init__(self, config: CoATValueConfig) -> None:
        self.config = config
        self._scorers: dict[str, Scorer] = {}

    def _scorer(self, ctx: RunContext, part: str) -> Scorer:
        if part not in self._scorers:
            config = self.config
            name, options = (
                (config.content_scorer, config.content_options)
                if part == "content"
                else (config.memory_scorer, config.memory_options)
            )
            self._scorers[part] = ctx.build("scorer", name, options)
        return self._scorers[part]

    async def score(self, batch: ScoreBatch, ctx: RunContext) -> list[float]:
        config = self.config
        content = await self._scorer(ctx, "content").score(batch, ctx)
        memories = [
            memory_of(c.node_id, ctx) if c.node_id is not None else None for c in batch.candidates
        ]
        recalled = [(i, m) for i, m in enumerate(memories) if m]
        memory_scores = [config.empty_memory_score] * len(memories)
        if recalled:
            ctx.budget.charge_scorer_call(len(recalled))  # the content part was charged
            judged = await self._scorer(ctx, "memory").score(
                ScoreBatch(
                    question=batch.question,
                    candidates=[
                        Candidate(text=m, step=m, node_id=batch.candidates[i].node_id)
                        for i, m in recalled
                    ],
                    reference=batch.reference,
                ),
                ctx,
            )
            for (i, _), value in zip(recalled, judged, strict=True):
                memory_scores[i] = float(value)
        values = []
        for candidate, c, m in zip(batch.candidates, content, memory_scores, strict=True):
            if candidate.node_id is not None:
                ctx.graph[candidate.node_id].scores.update({"content": c, "memory": m})
            values.append(c + config.beta * m)
        return values


@hookimpl
def orchestrator_add_graphs() -> list[GraphSpec]:
    return [
        GraphSpec(
            name="coat",
            factory=SearchGraph,
            config_model=CoATConfig,
            description="CoAT: MCTS over steps with a model-written associative memory per node",
            node_kinds={"association": AssociationAttrs},
        )
    ]


@hookimpl
def orchestrator_add_scorers() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="coat_value",
            factory=CoATValue,
            config_model=CoATValueConfig,
            description="CoAT's V = content score + beta * associative-memory score",
        )
    ]
