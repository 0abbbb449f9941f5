"""Beam search keeps exactly the top-width nodes of each round."""

from __future__ import annotations

from orchestrator.plugins.search.beam import BeamSearch, BeamSearchConfig, top_k

from orchestrator import Expansion, Orchestrator

from .conftest import context, grow


async def test_top_k_is_exact_and_stable(bare: Orchestrator) -> None:
    ctx = context(bare)
    nodes = [grow(ctx, "r", s) for s in (0.3, 0.9, 0.3, 0.7, 0.9)]
    assert [n.id for n in top_k(nodes, 3)] == ["r.1", "r.4", "r.3"]
    assert [n.id for n in top_k(nodes, 4)] == ["r.1", "r.4", "r.3", "r.0"]
    assert [n.id for n in top_k(nodes, 9)] == ["r.1", "r.4", "r.3", "r.0", "r.2"]


async def test_rounds_keep_the_top_width_and_carry_finished(bare: Orchestrator) -> None:
    ctx = context(bare)
    beam = BeamSearch(BeamSearchConfig(width=2, expansions_per_beam=2))
    assert beam.select(ctx) == [Expansion(node_id="r", num_children=4, until="step")]
    first = [grow(ctx, "r", s) for s in (0.2, 0.8, 0.5, 0.6)]
    beam.observe(ctx, first)
    assert [n.id for n in beam.beam] == ["r.1", "r.3"]
    assert beam.select(ctx) == [
        Expansion(node_id="r.1", num_children=2, until="step"),
        Expansion(node_id="r.3", num_children=2, until="step"),
    ]
    second = [
        grow(ctx, "r.1", 0.9, finished=True),
        grow(ctx, "r.1", 0.1),
        grow(ctx, "r.3", 0.4),
        grow(ctx, "r.3", 0.7),
    ]
    beam.observe(ctx, second)
    assert [n.id for n in beam.beam] == ["r.1.0", "r.3.1"]
    # The finished node is not expanded again; it competes with the new steps.
    assert beam.select(ctx) == [Expansion(node_id="r.3.1", num_children=2, until="step")]
    beam.observe(ctx, [grow(ctx, "r.3.1", 0.95, finished=True), grow(ctx, "r.3.1", 0.3)])
    assert [n.id for n in beam.beam] == ["r.3.1.0", "r.1.0"]
    assert beam.done(ctx)
    assert beam.best(ctx) is ctx.graph["r.3.1.0"]
    assert ctx.meta["search"] == {
        "strategy": "beam",
        "beams": [["r.1", "r.3"], ["r.1.0", "r.3.1"], ["r.3.1.0", "r.1.0"]],
    }
