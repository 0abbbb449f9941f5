"""A*-decoding: f = g + h, lowest f first, pluggable g, budgets."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from orchestrator.plugins.search.astar import AStar, AStarConfig

from orchestrator import Expansion, Orchestrator
from orchestrator.testing import ScriptedRuntime

from .conftest import context, grow


async def test_expands_lowest_f_with_prm_drop_cost(bare: Orchestrator) -> None:
    ctx = context(bare)
    astar = AStar(AStarConfig(k=2))
    assert astar.select(ctx) == [Expansion(node_id="r", num_children=2, until="step")]
    a, b = grow(ctx, "r", 0.9), grow(ctx, "r", 0.6)
    astar.observe(ctx, [a, b])
    assert a.attrs.stats == pytest.approx(
        {"f": 0.1, "g": 0.0, "h": 0.1}
    )  # no drop from the question
    assert astar.select(ctx) == [Expansion(node_id="r.0", num_children=2, until="step")]
    astar.observe(ctx, [grow(ctx, a, 0.5), grow(ctx, a, 0.7)])
    # r.0.0 dropped 0.4 (f = 0.4 + 0.5), r.0.1 dropped 0.2 (f = 0.2 + 0.3): r.1 (0.4) is lowest.
    assert astar.frontier == [
        (pytest.approx(0.4), "r.1"),
        (pytest.approx(0.5), "r.0.1"),
        (pytest.approx(0.9), "r.0.0"),
    ]
    assert astar.select(ctx) == [Expansion(node_id="r.1", num_children=2, until="step")]
    astar.observe(ctx, [grow(ctx, b, 1.0, finished=True), grow(ctx, b, 0.6)])
    assert not astar.done(ctx)
    assert astar.select(ctx) == []  # pops the finished r.1.0 (f = 0): a solution
    assert astar.done(ctx)
    assert astar.expanded == ["r", "r.0", "r.1"]
    assert astar.best(ctx) is ctx.graph["r.1.0"]
    assert ctx.meta["search"] == {
        "strategy": "astar",
        "expanded": ["r", "r.0", "r.1"],
        "solutions": ["r.1.0"],
        "frontier": 3,
    }


async def test_ties_go_to_the_state_pushed_first(bare: Orchestrator) -> None:
    ctx = context(bare)
    astar = AStar(AStarConfig(k=3, cost="zero"))
    astar.select(ctx)
    astar.observe(ctx, [grow(ctx, "r", 0.5), grow(ctx, "r", 0.7), grow(ctx, "r", 0.7)])
    assert astar.select(ctx) == [Expansion(node_id="r.1", num_children=3, until="step")]


async def test_depth_cost_and_custom_cost(bare: Orchestrator) -> None:
    ctx = context(bare)
    astar = AStar(AStarConfig(k=1, cost="depth", depth_cost=0.25))
    astar.select(ctx)
    child = grow(ctx, "r", 0.5)
    astar.observe(ctx, [child])
    assert child.attrs.stats == {"f": 0.75, "g": 0.25, "h": 0.5}
    custom = AStar(AStarConfig(k=1), cost=lambda g, parent_r, r, depth: g + 1.0)
    ctx = context(bare)
    custom.select(ctx)
    child = grow(ctx, "r", 0.5)
    custom.observe(ctx, [child])
    assert child.attrs.stats == {"f": 1.5, "g": 1.0, "h": 0.5}


async def test_budget_in_tokens_scorer_calls_and_expansions(bare: Orchestrator) -> None:
    ctx = context(bare)
    astar = AStar(AStarConfig(k=4, max_tokens=100, max_scorer_calls=10, max_expansions=3))
    assert not astar.done(ctx)
    ctx.budget.usage.scorer_calls = 7  # the next expansion's 4 calls would pass 10
    assert astar.done(ctx)
    ctx.budget.usage.scorer_calls = 6
    ctx.budget.usage.generated_tokens = 100
    assert astar.done(ctx)


async def test_budget_end_answers_with_the_best_finished_state_waiting(bare: Orchestrator) -> None:
    ctx = context(bare)
    astar = AStar(AStarConfig(k=3, max_expansions=1))
    astar.select(ctx)
    astar.observe(
        ctx,
        [
            grow(ctx, "r", 0.9),
            grow(ctx, "r", 0.4, finished=True),
            grow(ctx, "r", 0.8, finished=True),
        ],
    )
    assert astar.done(ctx)
    assert astar.best(ctx) is ctx.graph["r.2"]


def _lowest_f_run(draws: list[tuple[float, bool]]) -> None:
    ctx = context(Orchestrator(ScriptedRuntime()))
    astar = AStar(AStarConfig(k=3, num_solutions=2))
    scores = iter(draws)
    expansions = astar.select(ctx)
    while expansions:
        parent = expansions[0].node_id
        children = []
        for _ in range(3):
            score, finished = next(scores, (0.5, True))
            children.append(grow(ctx, parent, score, finished=finished))
        astar.observe(ctx, children)
        waiting = astar.frontier
        expansions = astar.select(ctx)
        still = {node_id for _, node_id in astar.frontier}
        popped = [(f, node_id) for f, node_id in waiting if node_id not in still]
        lowest_left = min((f for f, node_id in waiting if node_id in still), default=2.0)
        assert all(f <= lowest_left for f, _ in popped)
        solutions = popped if not expansions else popped[:-1]
        assert all(ctx.graph[node_id].attrs.finished for _, node_id in solutions)
        if expansions:
            assert expansions[0].node_id == popped[-1][1]
            assert not ctx.graph[popped[-1][1]].attrs.finished


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.booleans()),
        min_size=3,
        max_size=40,
    )
)
def test_always_expands_the_lowest_f(draws: list[tuple[float, bool]]) -> None:
    async def go() -> None:
        _lowest_f_run(draws)

    anyio.run(go)


async def test_ties_go_to_the_deeper_state(bare: Orchestrator) -> None:
    ctx = context(bare)
    astar = AStar(AStarConfig(k=2, cost="zero"))
    astar.select(ctx)
    astar.observe(ctx, [grow(ctx, "r", 0.5), grow(ctx, "r", 0.5)])
    assert astar.select(ctx) == [Expansion(node_id="r.0", num_children=2, until="step")]
    astar.observe(ctx, [grow(ctx, "r.0", 0.5), grow(ctx, "r.0", 0.5)])
    # r.1, r.0.0 and r.0.1 all have f = 0.5: the deeper r.0.0 goes first, not r.1.
    assert astar.frontier == [(0.5, "r.0.0"), (0.5, "r.0.1"), (0.5, "r.1")]
    assert astar.select(ctx) == [Expansion(node_id="r.0.0", num_children=2, until="step")]
