"""Particle filtering and particle Gibbs: weights, resampling, finished particles, references."""

from __future__ import annotations

import math

import pytest
from orchestrator.plugins.search.particle_filter import ParticleFilter, ParticleFilterConfig
from orchestrator.plugins.search.weights import particle_weights

from orchestrator import ConfigError, Expansion, Orchestrator, RunConfig

from .conftest import context, grow

SURE, NEVER = 1.0, 0.0  # logits ±16: all the weight goes to the SURE particles


async def test_resampling_frequencies_match_the_softmax_weights(bare: Orchestrator) -> None:
    rewards = [0.1, 0.3, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9]
    temperature = 2.0
    counts = [0] * len(rewards)
    num_seeds = 300
    for seed in range(num_seeds):
        ctx = context(bare, seed=seed)
        pf = ParticleFilter(ParticleFilterConfig(num_particles=8, temperature=temperature))
        pf.select(ctx)
        children = [grow(ctx, "r", r) for r in rewards]
        pf.observe(ctx, children)
        for node_id in pf.particles:
            counts[int(node_id.split(".")[1])] += 1
    total = num_seeds * len(rewards)
    weights = particle_weights(rewards, temperature)
    for count, weight in zip(counts, weights, strict=True):
        assert abs(count / total - weight) < 4 * math.sqrt(weight * (1 - weight) / total)


async def test_same_seed_same_draws(bare: Orchestrator) -> None:
    drawn = []
    for _ in range(2):
        ctx = context(bare, seed=5)
        pf = ParticleFilter(ParticleFilterConfig(num_particles=4))
        pf.select(ctx)
        pf.observe(ctx, [grow(ctx, "r", r) for r in (0.2, 0.4, 0.6, 0.8)])
        drawn.append(pf.particles)
    assert drawn[0] == drawn[1]


async def test_a_particle_drawn_k_times_is_k_children_of_one_node(bare: Orchestrator) -> None:
    ctx = context(bare)
    pf = ParticleFilter(ParticleFilterConfig(num_particles=4))
    assert pf.select(ctx) == [Expansion(node_id="r", num_children=4, until="step")]
    pf.observe(ctx, [grow(ctx, "r", r) for r in (NEVER, SURE, NEVER, NEVER)])
    assert pf.particles == ["r.1"] * 4
    assert pf.select(ctx) == [Expansion(node_id="r.1", num_children=4, until="step")]
    assert ctx.graph["r.1"].attrs.stats["weight"] == pytest.approx(1.0)
    steps = [grow(ctx, "r.1", SURE, finished=True), *(grow(ctx, "r.1", NEVER) for _ in range(3))]
    pf.observe(ctx, steps)
    # Kept in the pool, the finished particle takes every draw; nothing is left to expand.
    assert pf.particles == ["r.1.0"] * 4
    assert pf.select(ctx) == []
    assert pf.done(ctx)
    assert pf.best(ctx) is ctx.graph["r.1.0"]
    assert ctx.meta["search"]["strategy"] == "particle_filter"
    assert [(e["step"], e["drawn"]) for e in ctx.meta["search"]["resampling"]] == [
        (1, ["r.1"] * 4),
        (2, ["r.1.0"] * 4),
    ]


async def test_finished_particles_set_aside(bare: Orchestrator) -> None:
    ctx = context(bare)
    pf = ParticleFilter(ParticleFilterConfig(num_particles=3, resample_finished=False))
    pf.select(ctx)
    pf.observe(
        ctx, [grow(ctx, "r", 0.9, finished=True), grow(ctx, "r", NEVER), grow(ctx, "r", SURE)]
    )
    assert pf.aside == ["r.0"]
    assert pf.particles == ["r.2", "r.2"]  # only the active ones, as many as there are
    assert pf.select(ctx) == [Expansion(node_id="r.2", num_children=2, until="step")]
    pf.observe(ctx, [grow(ctx, "r.2", 0.3, finished=True), grow(ctx, "r.2", 0.2, finished=True)])
    assert pf.done(ctx)
    assert pf.best(ctx) is ctx.graph["r.0"]  # argmax over the final pool, set-aside included


async def test_particle_gibbs_reference_competes_and_is_truncated(bare: Orchestrator) -> None:
    ctx = context(bare)
    pg = ParticleFilter(ParticleFilterConfig(num_particles=3, num_iterations=2))
    assert pg.select(ctx) == [Expansion(node_id="r", num_children=3, until="step")]
    pg.observe(ctx, [grow(ctx, "r", r) for r in (NEVER, SURE, NEVER)])
    assert pg.select(ctx) == [Expansion(node_id="r.1", num_children=3, until="step")]
    pg.observe(ctx, [grow(ctx, "r.1", s, finished=True) for s in (SURE, NEVER, NEVER)])
    # Sweep 1 is over: the reference trajectory is drawn ∝ the final weights.
    assert pg.references == [["r.1", "r.1.0"]]
    assert not pg.done(ctx)
    assert pg.select(ctx) == [Expansion(node_id="r", num_children=2, until="step")]
    pg.observe(ctx, [grow(ctx, "r", NEVER), grow(ctx, "r", NEVER)])
    # The reference's step-1 node outweighs the fresh particles: both continue from it.
    assert pg.particles == ["r.1", "r.1"]
    assert pg.select(ctx) == [Expansion(node_id="r.1", num_children=2, until="step")]
    pg.observe(ctx, [grow(ctx, "r.1", NEVER, finished=True), grow(ctx, "r.1", 0.5, finished=True)])
    assert pg.done(ctx)
    assert pg.best(ctx) is ctx.graph["r.1.0"]  # the reference's own solution is in the pool
    assert ctx.meta["search"]["strategy"] == "particle_gibbs"


async def test_max_steps_finishes_a_particle_with_its_answer(bare: Orchestrator) -> None:
    ctx = context(bare)
    pf = ParticleFilter(ParticleFilterConfig(num_particles=1, max_steps=1))
    pf.select(ctx)
    step = grow(ctx, "r", 0.5, text="3 + 4 = 7\n\n")
    pf.observe(ctx, [step])
    assert (step.attrs.finished, step.attrs.answer) == (True, "7")
    assert pf.done(ctx)


async def test_sampled_selection_is_seeded(bare: Orchestrator) -> None:
    picks = set()
    for seed in range(20):
        ctx = context(bare, seed=seed)
        pf = ParticleFilter(ParticleFilterConfig(num_particles=2, selection="sample"))
        pf.select(ctx)
        pf.observe(ctx, [grow(ctx, "r", 0.5, finished=True), grow(ctx, "r", 0.5, finished=True)])
        picks.add(pf.best(ctx).id)  # type: ignore[union-attr]
        assert pf.best(ctx) is pf.best(ctx)
    assert picks == {"r.0", "r.1"}


def test_references_must_leave_a_free_particle(bare: Orchestrator) -> None:
    with pytest.raises(
        ConfigError,
        match=r"strategy: Value error, num_reference \(2\) must be below num_particles \(2\)",
    ):
        bare.prepare(
            "q",
            RunConfig(
                strategy="particle_filter",
                strategy_options={"num_particles": 2, "num_iterations": 2, "num_reference": 2},
            ),
        )
