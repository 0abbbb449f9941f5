"""Monte Carlo tree search over reasoning steps, with UCT selection: the search core of CoAT.

CoAT ("Chain-of-Associated-Thoughts Framework for Enhancing LLMs Reasoning", Pan et al.,
arXiv 2502.02390; methods.md §4) runs MCTS whose nodes are reasoning steps; the ``coat``
graph configures this strategy, and it runs on its own too (``--graph search --strategy
mcts``). One iteration:

1. **Selection**: from the question, descend to the child maximising
   ``UCT(c) = Q(c) + C · sqrt(ln N(parent) / N(c))`` (Kocsis & Szepesvári's UCB1 for trees)
   until a node without children. ``Q`` is the mean of the values backed up through ``c``,
   ``N`` its visit count, ``C`` the ``exploration`` constant. Each UCT value is recorded in
   the child's ``attrs.stats["uct"]``.
2. **Expansion**: the leaf gets ``num_children`` (K) children, one step each, generated and
   scored by the graph; a child's value ``V`` is its ``node.score`` (CoAT: content score +
   β · memory score).
3. **Backpropagation**: each new child starts with ``N = 1``, ``Q = V``; every node on its
   path up to the question gains one visit and ``V`` in its sum (``attrs.visits``,
   ``attrs.value = Q``).
4. **Termination**: once a finished node scores at least ``score_threshold``, after
   ``max_iterations`` iterations, when nothing is left to expand, or on the run's budget.

The answer is the finished node with the highest ``V`` (ties: more visits, then the earlier
node); with none finished, there is no answer.

Parameters: ``num_children`` (K, 3), ``exploration`` (C, √2), ``max_depth`` (D, 5 steps),
``max_iterations`` (16), ``score_threshold`` (None: off), ``until`` (``step``).

Unspecified by the paper, chosen here [unverified]: the defaults above; each child backs up
its own value (a K-way expansion counts as K simulations) rather than one value per
expansion; no rollout beyond the new step (its evaluation is the simulation); a leaf that is
finished or at depth D is not expanded: selecting it backs up its value once more and counts
as an iteration (the usual treatment of terminal states); unvisited children (N = 0) would
rank first, ties in UCT go to the earlier child.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, Expansion, Node, SearchAttrs, hookimpl

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["MCTS", "MCTSConfig", "uct"]


class MCTSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_children: int = Field(3, ge=1)
    exploration: float = Field(math.sqrt(2.0), ge=0.0)
    max_depth: int = Field(5, ge=1)
    max_iterations: int = Field(16, ge=1)
    score_threshold: float | None = None
    until: Literal["step", "solution"] = "step"


def uct(q: float, parent_visits: int, visits: int, exploration: float) -> float:
    """``Q + C · sqrt(ln N_parent / N)``; infinite for an unvisited node."""
    if visits == 0:
        return math.inf
    return q + exploration * math.sqrt(math.log(parent_visits) / visits)


class MCTS:
    def __init__(self, config: MCTSConfig) -> None:
        self.config = config
        #: Visit count and sum of backed-up values per node id (the question included).
        self.visits: dict[str, int] = {}
        self.totals: dict[str, float] = {}
        self.iterations = 0
        #: Node ids in the order they were expanded.
        self.expanded: list[str] = []
        #: Terminal leaves selected again (their value backed up once more).
        self.revisited: list[str] = []

    def select(self, ctx: RunContext) -> Sequence[Expansion]:
        config = self.config
        while self.iterations < config.max_iterations and not self._solved(ctx):
            leaf = self._descend(ctx)
            self.iterations += 1
            if leaf.id != ctx.root.id and self._terminal(leaf):
                self.revisited.append(leaf.id)
                self._backpropagate(ctx, leaf, leaf.score or 0.0)
                continue
            self.expanded.append(leaf.id)
            self._report(ctx)
            return [
                Expansion(node_id=leaf.id, num_children=config.num_children, until=config.until)
            ]
        self._report(ctx)
        return []

    def observe(self, ctx: RunContext, children: Sequence[Node]) -> None:
        for child in children:
            value = child.score if child.score is not None else 0.0
            self.visits[child.id], self.totals[child.id] = 0, 0.0
            self._backpropagate(ctx, child, value)
        self._report(ctx)

    def done(self, ctx: RunContext) -> bool:
        return self.iterations >= self.config.max_iterations or self._solved(ctx)

    def best(self, ctx: RunContext) -> Node | None:
        finished = [
            ctx.graph[i] for i in self.visits if i != ctx.root.id and _finished(ctx.graph[i])
        ]
        if not finished:
            return None
        order = {node_id: n for n, node_id in enumerate(self.visits)}
        return max(finished, key=lambda n: (n.score or 0.0, self.visits[n.id], -order[n.id]))

    def q(self, node_id: str) -> float:
        return self.totals[node_id] / self.visits[node_id]

    def _descend(self, ctx: RunContext) -> Node:
        node = ctx.root
        self.visits.setdefault(node.id, 0)
        self.totals.setdefault(node.id, 0.0)
        while True:
            children = [c for c in ctx.graph.children(node.id) if c.id in self.visits]
            if not children:
                return node
            parent_visits = self.visits[node.id]
            best, best_uct = children[0], -math.inf
            for child in children:
                value = uct(
                    self.q(child.id) if self.visits[child.id] else 0.0,
                    parent_visits,
                    self.visits[child.id],
                    self.config.exploration,
                )
                _stats(child)["uct"] = value
                if value > best_uct:
                    best, best_uct = child, value
            node = best

    def _terminal(self, node: Node) -> bool:
        return _finished(node) or node.depth >= self.config.max_depth

    def _backpropagate(self, ctx: RunContext, node: Node, value: float) -> None:
        for member in [*ctx.graph.ancestors(node.id), node]:
            self.visits[member.id] = self.visits.get(member.id, 0) + 1
            self.totals[member.id] = self.totals.get(member.id, 0.0) + value
            if isinstance(member.attrs, SearchAttrs):
                member.attrs.visits = self.visits[member.id]
                member.attrs.value = self.q(member.id)

    def _solved(self, ctx: RunContext) -> bool:
        threshold = self.config.score_threshold
        if threshold is None:
            return False
        return any(
            _finished(n) and (n.score or 0.0) >= threshold
            for i in self.visits
            if i != ctx.root.id
            for n in (ctx.graph[i],)
        )

    def _report(self, ctx: RunContext) -> None:
        root = ctx.root.id
        ctx.meta["search"] = {
            "strategy": "mcts",
            "iterations": self.iterations,
            "expanded": list(self.expanded),
            "revisited": list(self.revisited),
            "root_visits": self.visits.get(root, 0),
        }


def _finished(node: Node) -> bool:
    return bool(getattr(node.attrs, "finished", False))


def _stats(node: Node) -> dict[str, float]:
    attrs = node.attrs
    assert isinstance(attrs, SearchAttrs)
    return attrs.stats


@hookimpl
def orchestrator_add_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="mcts",
            factory=MCTS,
            config_model=MCTSConfig,
            description="Monte Carlo tree search with UCT over steps (CoAT's search core)",
        )
    ]
