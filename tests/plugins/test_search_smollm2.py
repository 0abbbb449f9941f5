"""Every strategy end to end on the real SmolLM2-135M (embedded runtime, CPU), short budgets.

A real model's text is not scripted, so these assert the contracts that hold for any text:
the tree each strategy must grow, one scorer call per grown node, the token budget, the answer
coming from the chosen finished node, and reproducibility under one seed.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator import BudgetLimits, Orchestrator, RunConfig, RunResult

QUESTION = (
    "Mia has 11 pencils. She gives 7 pencils to a friend. How many pencils does Mia have now?"
)
GRAPH = {"max_step_tokens": 24, "max_solution_tokens": 64, "temperature": 0.8}
MAX_TOKENS = 400


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def orch() -> AsyncIterator[Orchestrator]:
    from orchestrator.runtimes.embedded import EmbeddedRuntime

    runtime = EmbeddedRuntime.from_pretrained(None, kv_cache_bytes=256 * 2**20)
    yield Orchestrator(runtime)
    await runtime.aclose()


async def search(orch: Orchestrator, strategy: str, scorer: str, **options: Any) -> RunResult:
    config = RunConfig(
        graph_options=GRAPH,
        strategy=strategy,
        strategy_options=options,
        scorer=scorer,
        budget=BudgetLimits(max_generated_tokens=MAX_TOKENS),
        seed=1,
    )
    return await orch.run(QUESTION, config)


def check_common(result: RunResult) -> list[Any]:
    """What every search run guarantees; returns its search nodes."""
    nodes = [n for n in result.graph if n.kind == "search"]
    assert result.stop_reason in ("done", "budget")
    assert result.usage.generated_tokens == sum(n.usage.generated_tokens for n in nodes)
    assert result.usage.generated_tokens <= MAX_TOKENS
    scored = [n for n in nodes if n.score is not None]
    assert result.usage.scorer_calls == len(scored)
    assert all(0.0 <= n.score <= 1.0 for n in scored)  # type: ignore[operator]
    if result.answer_node is not None:
        best = result.graph[result.answer_node]
        assert result.answer == best.attrs.answer  # type: ignore[union-attr]
    return nodes


async def test_self_consistency(orch: Orchestrator) -> None:
    result = await search(orch, "self_consistency", "majority_vote", n=3)
    nodes = check_common(result)
    assert [n.parent_ids for n in nodes] == [("r",)] * 3  # three whole solutions
    answers = [n.attrs.answer for n in nodes if n.attrs.finished]
    if result.answer is not None:
        assert answers.count(result.answer) == max(answers.count(a) for a in answers)


async def test_best_of_n_with_the_step_checker(orch: Orchestrator) -> None:
    result = await search(orch, "best_of_n", "step_checker", n=3)
    nodes = check_common(result)
    assert len(nodes) == 3
    finished = [n for n in nodes if n.attrs.finished]
    if result.answer_node is not None and finished:
        assert result.graph[result.answer_node].score == max(n.score for n in finished)


async def test_beam(orch: Orchestrator) -> None:
    result = await search(orch, "beam", "step_checker", width=2, expansions_per_beam=2)
    nodes = check_common(result)
    assert [n.id for n in nodes if n.depth == 1] == ["r.0", "r.1", "r.2", "r.3"]
    beams = result.meta["search"]["beams"]
    by_id = {n.id: n for n in nodes}
    assert all(len(beam) <= 2 for beam in beams)
    for beam, next_beam in itertools.pairwise(beams):
        # New members grew from the previous beam; the others are finished ones carried over.
        parents = {n.parent_ids[0] for n in nodes if n.id in next_beam and n.id not in beam}
        assert parents <= set(beam)
        assert all(by_id[i].attrs.finished for i in next_beam if i in beam)


async def test_astar(orch: Orchestrator) -> None:
    result = await search(orch, "astar", "step_checker", k=2, max_expansions=4)
    nodes = check_common(result)
    expanded = result.meta["search"]["expanded"]
    assert expanded[0] == "r" and 1 <= len(expanded) <= 4
    for node in nodes:
        stats = node.attrs.stats
        assert stats["f"] == pytest.approx(stats["g"] + stats["h"])
        assert stats["h"] == pytest.approx(1.0 - node.score)


async def test_particle_filter_is_reproducible(orch: Orchestrator) -> None:
    first = await search(orch, "particle_filter", "step_checker", num_particles=2, max_steps=3)
    nodes = check_common(first)
    assert [n.id for n in nodes if n.depth == 1] == ["r.0", "r.1"]
    assert max(n.depth for n in nodes) <= 3
    again = await search(orch, "particle_filter", "step_checker", num_particles=2, max_steps=3)
    assert [(n.id, n.text) for n in again.graph] == [(n.id, n.text) for n in first.graph]
    assert again.answer == first.answer


async def test_particle_gibbs(orch: Orchestrator) -> None:
    result = await search(
        orch, "particle_filter", "step_checker", num_particles=3, num_iterations=2, max_steps=2
    )
    nodes = check_common(result)
    meta = result.meta["search"]
    assert meta["strategy"] == "particle_gibbs"
    # Sweep 2 starts N - 1 = 2 fresh particles at the question, next to the reference.
    # 2 sweeps × 3 particles × 2 steps × 24 tokens fit the budget: both sweeps run.
    assert result.stop_reason == "done"
    assert [n.id for n in nodes if n.depth == 1] == ["r.0", "r.1", "r.2", "r.3", "r.4"]
    (reference,) = meta["references"]
    assert [result.graph[i].depth for i in reference] == list(range(1, len(reference) + 1))
    assert reference[0] in ("r.0", "r.1", "r.2")  # drawn from sweep 1
