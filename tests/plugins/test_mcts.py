"""MCTS: UCT arithmetic, backpropagation, terminal leaves, termination, the search graph."""

from __future__ import annotations

import math
from typing import Any

import pytest
from orchestrator.plugins.search.mcts import MCTS, MCTSConfig, uct

from orchestrator import ComponentSpec, Expansion, Orchestrator, hookimpl
from orchestrator.testing import ScriptedRuntime

from .conftest import context, grow


def stats(ctx: Any, *ids: str) -> list[tuple[int, float]]:
    """``(visits, Q)`` of each node."""
    return [(ctx.graph[i].attrs.visits, ctx.graph[i].attrs.value) for i in ids]


def test_uct_is_q_plus_c_sqrt_log_parent_visits_over_visits() -> None:
    assert uct(0.5, 4, 2, 1.0) == pytest.approx(0.5 + math.sqrt(math.log(4) / 2))
    assert uct(0.5, 4, 2, 0.0) == 0.5
    assert uct(0.0, 4, 0, 1.0) == math.inf


async def test_selection_descends_by_uct_and_backpropagation_averages(bare: Orchestrator) -> None:
    ctx = context(bare)
    mcts = MCTS(MCTSConfig(num_children=2, exploration=1.0))
    assert mcts.select(ctx) == [Expansion(node_id="r", num_children=2, until="step")]
    a, b = grow(ctx, "r", 0.6), grow(ctx, "r", 0.4)
    mcts.observe(ctx, [a, b])
    assert (mcts.visits["r"], mcts.totals["r"]) == (2, pytest.approx(1.0))
    assert stats(ctx, "r.0", "r.1") == [(1, 0.6), (1, 0.4)]
    # UCT(a) = 0.6 + sqrt(ln 2 / 1) = 1.4326 > UCT(b) = 1.2326: expand a.
    assert mcts.select(ctx) == [Expansion(node_id="r.0", num_children=2, until="step")]
    assert a.attrs.stats["uct"] == pytest.approx(0.6 + math.sqrt(math.log(2)))
    assert b.attrs.stats["uct"] == pytest.approx(0.4 + math.sqrt(math.log(2)))
    mcts.observe(ctx, [grow(ctx, a, 0.9), grow(ctx, a, 0.5)])
    assert stats(ctx, "r.0") == [(3, pytest.approx(2.0 / 3))]
    assert (mcts.visits["r"], mcts.totals["r"]) == (4, pytest.approx(2.4))
    # UCT(a) = 2/3 + sqrt(ln 4 / 3) = 1.3464 < UCT(b) = 0.4 + sqrt(ln 4) = 1.5774: expand b.
    assert mcts.select(ctx) == [Expansion(node_id="r.1", num_children=2, until="step")]
    assert a.attrs.stats["uct"] == pytest.approx(2 / 3 + math.sqrt(math.log(4) / 3))
    assert b.attrs.stats["uct"] == pytest.approx(0.4 + math.sqrt(math.log(4)))
    mcts.observe(ctx, [grow(ctx, b, 1.0, finished=True), grow(ctx, b, 0.2)])
    assert stats(ctx, "r.1", "r.1.0", "r.1.1") == [
        (3, pytest.approx(1.6 / 3)),
        (1, 1.0),
        (1, 0.2),
    ]
    # At the root a wins again (1.4395 vs 1.3062); below it, a1 (0.9 + sqrt(ln 3)) beats a2.
    assert mcts.select(ctx) == [Expansion(node_id="r.0.0", num_children=2, until="step")]
    assert a.attrs.stats["uct"] == pytest.approx(2 / 3 + math.sqrt(math.log(6) / 3))
    assert ctx.graph["r.0.0"].attrs.stats["uct"] == pytest.approx(0.9 + math.sqrt(math.log(3)))
    assert ctx.meta["search"] == {
        "strategy": "mcts",
        "iterations": 4,
        "expanded": ["r", "r.0", "r.1", "r.0.0"],
        "revisited": [],
        "root_visits": 6,
    }
    assert mcts.best(ctx) is ctx.graph["r.1.0"]


async def test_a_finished_node_above_the_threshold_ends_the_search(bare: Orchestrator) -> None:
    ctx = context(bare)
    mcts = MCTS(MCTSConfig(num_children=2, score_threshold=0.95))
    mcts.select(ctx)
    mcts.observe(ctx, [grow(ctx, "r", 0.97), grow(ctx, "r", 0.99, finished=True)])
    assert mcts.done(ctx)
    assert mcts.select(ctx) == []
    assert mcts.best(ctx) is ctx.graph["r.1"]


async def test_terminal_leaves_are_revisited_not_expanded(bare: Orchestrator) -> None:
    ctx = context(bare)
    mcts = MCTS(MCTSConfig(num_children=2, exploration=1.0, max_depth=1, max_iterations=4))
    mcts.select(ctx)
    mcts.observe(ctx, [grow(ctx, "r", 0.6), grow(ctx, "r", 0.4)])
    # Every leaf is at depth D: each iteration backs up a leaf's value again, by UCT:
    # a (1.4326 vs 1.2326), then b (1.3411 vs 1.4481), then a (1.4326 vs 1.2326).
    assert mcts.select(ctx) == []
    assert mcts.revisited == ["r.0", "r.1", "r.0"]
    assert stats(ctx, "r.0", "r.1") == [(3, pytest.approx(0.6)), (2, pytest.approx(0.4))]
    assert (mcts.visits["r"], mcts.totals["r"]) == (5, pytest.approx(2.6))
    assert mcts.done(ctx)
    assert mcts.best(ctx) is None  # nothing finished


async def test_best_prefers_value_then_visits_then_the_earlier_node(bare: Orchestrator) -> None:
    ctx = context(bare)
    mcts = MCTS(MCTSConfig(num_children=3))
    mcts.select(ctx)
    first, second, third = (
        grow(ctx, "r", 0.8, finished=True),
        grow(ctx, "r", 0.8, finished=True),
        grow(ctx, "r", 0.5, finished=True),
    )
    mcts.observe(ctx, [first, second, third])
    assert mcts.best(ctx) is first
    mcts.visits[second.id] += 1
    assert mcts.best(ctx) is second


class _StepScorer:
    """Scores a step by a table of its text (exact values for the search graph test)."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    async def score(self, batch: Any, ctx: Any) -> list[float]:
        return [self.table[c.step] for c in batch.candidates]


class _Plugin:
    @hookimpl
    def orchestrator_add_scorers(self) -> list[ComponentSpec]:
        table = {"A.\n\n": 0.6, "B.\n\n": 0.4, "A1 #### 7": 0.9, "A2 #### 5": 0.3}
        return [ComponentSpec(name="table", factory=lambda _config: _StepScorer(table))]


async def test_the_search_graph_runs_mcts() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {"endswith": "A.\n\n", "outputs": ["A1 #### 7", "A2 #### 5"], "then": "cycle"},
                {"endswith": "assistant\n", "outputs": ["A.\n\n", "B.\n\n"], "then": "cycle"},
            ]
        }
    )
    orch = Orchestrator(rt, plugins=[_Plugin()])
    result = await orch.run(
        "q",
        strategy="mcts",
        scorer="table",
        strategy_options={"num_children": 2, "exploration": 1.0, "max_iterations": 2},
    )
    tree = [(n.id, n.text, n.score, n.attrs.visits) for n in result.graph if n.kind == "search"]
    assert tree == [
        ("r.0", "A.\n\n", 0.6, 3),
        ("r.1", "B.\n\n", 0.4, 1),
        ("r.0.0", "A1 #### 7", 0.9, 1),
        ("r.0.1", "A2 #### 5", 0.3, 1),
    ]
    assert (result.answer, result.answer_node) == ("7", "r.0.0")
    assert result.meta["search"]["expanded"] == ["r", "r.0"]
