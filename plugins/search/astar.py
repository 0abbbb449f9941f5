"""A*-decoding: best-first search over partial solutions with f = g + h, h = 1 − PRM score.

Chatziveroglou, 2025, "Token-Efficient Inference Scaling" (arXiv 2505.13672). A state is a
partial solution; the frontier is a priority queue on ``f(s) = g(s) + h(s)`` with
``h(s) = 1 − r(s)`` and ``r`` the scorer's (PRM's) score of the path. Each round pops the
frontier's lowest-f state: a finished one is a solution; otherwise ``k`` continuations are
sampled (one step each), scored, and pushed. The search stops at ``num_solutions``
solutions, an empty frontier, or the budget (tokens and scorer calls), and answers with the
best solution found.

Parameters: ``k`` (samples per expansion, default 4); ``cost`` — the g function (below);
``depth_cost`` (λ for ``cost="depth"``); ``num_solutions`` (default 1); ``max_tokens`` and
``max_scorer_calls`` (the search budget: no expansion starts once generated tokens reach
``max_tokens``, or when its ``k`` scorer calls would pass ``max_scorer_calls``; the run's
``BudgetLimits`` stay a hard cap on top); ``max_expansions``.

g is pluggable (the paper's exact form is not public, methods.md §5 [2nd]):

- ``prm_drop`` (default): the survey's "accumulated drops in PRM score",
  ``g(s') = g(s) + max(0, r(s) − r(s'))``, so g only grows when the reward falls and f stays
  monotone along a path;
- ``zero``: g = 0, greedy best-first on the PRM;
- ``depth``: ``g = depth_cost × depth``, a per-step cost;
- or any callable ``(parent_g, parent_r, child_r, child_depth) -> g`` given to
  :class:`AStar` by a plugin that registers its own spec.

Unspecified by the paper, chosen here: the question has no score, so a first step costs no
drop (g = 0); ties in f go to the deeper state (the usual A* tie-break towards the goal: with
a PRM that often gives equal scores, breadth-first order among ties would spend the budget
on shallow states), then to the state pushed first; when the budget ends the search before a
solution is popped, the answer is the finished state with the lowest f in the frontier (else
none); a solution popped is final (no re-opening of closed states: the tree has no merges).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, Expansion, Node, hookimpl

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["COSTS", "AStar", "AStarConfig", "CostFunction"]

#: ``(parent_g, parent_r, child_r, child_depth) -> child_g``; ``parent_r`` is None at the root.
CostFunction = Callable[[float, float | None, float, int], float]


def _prm_drop(parent_g: float, parent_r: float | None, child_r: float, depth: int) -> float:
    return parent_g + (0.0 if parent_r is None else max(0.0, parent_r - child_r))


def _zero(parent_g: float, parent_r: float | None, child_r: float, depth: int) -> float:
    return 0.0


COSTS: Mapping[str, CostFunction] = MappingProxyType({"prm_drop": _prm_drop, "zero": _zero})


class AStarConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(4, ge=1)
    cost: Literal["prm_drop", "zero", "depth"] = "prm_drop"
    depth_cost: float = Field(0.1, ge=0.0)
    num_solutions: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_scorer_calls: int | None = Field(None, ge=1)
    max_expansions: int | None = Field(None, ge=1)


class AStar:
    def __init__(self, config: AStarConfig, cost: CostFunction | None = None) -> None:
        self.config = config
        if cost is not None:
            self.cost = cost
        elif config.cost == "depth":
            weight = config.depth_cost
            self.cost = lambda g, parent_r, child_r, depth: weight * depth
        else:
            self.cost = COSTS[config.cost]
        self._frontier: list[tuple[float, int, int, str]] = []  # (f, -depth, order, id)
        self._pushed = 0
        self._started = False
        self.solutions: list[Node] = []
        #: Node ids in the order they were expanded (popped and not finished).
        self.expanded: list[str] = []
        self._g: dict[str, float] = {}
        self._r: dict[str, float | None] = {}
        self._f: dict[str, float] = {}

    @property
    def frontier(self) -> list[tuple[float, str]]:
        """``(f, node_id)`` of the states waiting, in the order they would be popped."""
        return [(f, node_id) for f, _, _, node_id in sorted(self._frontier)]

    def select(self, ctx: RunContext) -> Sequence[Expansion]:
        if not self._started:
            self._started = True
            self._g[ctx.root.id], self._r[ctx.root.id] = 0.0, None
            self._push(ctx.root.id, 0.0, 0)
        while self._frontier and not self._enough():
            _, _, _, node_id = heapq.heappop(self._frontier)
            node = ctx.graph[node_id]
            if _finished(node):
                self.solutions.append(node)
                continue
            self.expanded.append(node_id)
            self._report(ctx)
            return [Expansion(node_id=node_id, num_children=self.config.k, until="step")]
        self._report(ctx)
        return []

    def observe(self, ctx: RunContext, children: Sequence[Node]) -> None:
        for child in children:
            parent = child.parent_ids[0]
            r = child.score if child.score is not None else 0.0
            g = self.cost(self._g[parent], self._r[parent], r, child.depth)
            h = 1.0 - r
            self._g[child.id], self._r[child.id] = g, r
            child.attrs.stats.update({"f": g + h, "g": g, "h": h})  # type: ignore[union-attr]
            self._push(child.id, g + h, child.depth)

    def done(self, ctx: RunContext) -> bool:
        if self._enough():
            return True
        config, usage = self.config, ctx.budget.usage
        if config.max_tokens is not None and usage.generated_tokens >= config.max_tokens:
            return True
        if config.max_scorer_calls is not None and (
            usage.scorer_calls + config.k > config.max_scorer_calls
        ):
            return True
        return config.max_expansions is not None and len(self.expanded) >= config.max_expansions

    def best(self, ctx: RunContext) -> Node | None:
        if self.solutions:
            return min(self.solutions, key=lambda node: self._f[node.id])
        waiting = sorted(self._frontier)
        return next((ctx.graph[i] for *_, i in waiting if _finished(ctx.graph[i])), None)

    def _push(self, node_id: str, f: float, depth: int) -> None:
        self._f[node_id] = f
        heapq.heappush(self._frontier, (f, -depth, self._pushed, node_id))
        self._pushed += 1

    def _enough(self) -> bool:
        return len(self.solutions) >= self.config.num_solutions

    def _report(self, ctx: RunContext) -> None:
        ctx.meta["search"] = {
            "strategy": "astar",
            "expanded": list(self.expanded),
            "solutions": [node.id for node in self.solutions],
            "frontier": len(self._frontier),
        }


def _finished(node: Node) -> bool:
    return bool(getattr(node.attrs, "finished", False))


@hookimpl
def orchestrator_add_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="astar",
            factory=AStar,
            config_model=AStarConfig,
            description="A*-decoding: expand the lowest f = g + (1 - PRM score) first",
        )
    ]
