"""Particle filtering and particle Gibbs over reasoning steps.

Puri et al., 2025, "A Probabilistic Inference Approach to Inference-Time Scaling of LLMs using
Particle-Based Monte Carlo Methods" (arXiv 2502.01618; v4 "Rollout Roulette"), following the
released code (``particle_gibbs_batch.py``) and its_hub's ``ParticleGibbs`` (methods.md §6).

One sweep: N particles start at the question. Each round every active particle takes one step
(a child node), the scorer (PRM) rewards the path, and the particles are resampled
multinomially with replacement, with weights ``softmax(logit(r) / temperature)`` of their
latest rewards, drawn from a generator seeded by ``ctx.seed_for`` (so a run is reproducible).
A particle resampled k times is k children of the same node: forks share the prefix's KV on
runtimes with prefix sharing. A particle stops at EOS / a final answer / ``max_steps``; the
sweep ends when none is active. Particle Gibbs (``num_iterations`` > 1): after a sweep,
``num_reference`` reference trajectories are drawn ∝ the final weights; the next sweep runs
N − num_reference fresh particles, and at step t each reference's step-t reward competes in
the resampling. A reference drawn as a free particle continues from its step-t node (its_hub's
truncate-and-unstop).

Parameters: ``num_particles`` (N, default 8); ``temperature`` (τ, default 1); ``eps`` (rewards
are clipped to ``[eps, 1 − eps]`` before the logit, its_hub's 1e-7); ``resample_finished``
(default True, the released script's ``--resample-inactive``: finished particles stay in the
pool with their last reward; False: they are set aside and only active ones are resampled,
as many as there are); ``selection`` (``argmax``, the eval notebook's highest last reward, ties
to the first; or ``sample`` ∝ weights); ``num_iterations``, ``num_reference``; ``max_steps`` (40).

Unspecified, chosen here: when no particle is active after a step the sweep ends without a
last resampling (the released code's loop test; its_hub resamples once more); the final pool
is the last sweep's particles, the set-aside ones and the references; a particle stopped by
``max_steps`` is finished with the answer its text gives; a budget that ends the run mid-sweep
leaves the choice among the current pool's finished particles (else all of it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator import ComponentSpec, Expansion, Node, hookimpl

from ..scorers.answers import extract_answer
from .weights import multinomial, particle_weights

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["ParticleFilter", "ParticleFilterConfig"]


class ParticleFilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_particles: int = Field(8, ge=1)
    temperature: float = Field(1.0, gt=0.0)
    eps: float = Field(1e-7, gt=0.0, lt=0.5)
    resample_finished: bool = True
    selection: Literal["argmax", "sample"] = "argmax"
    num_iterations: int = Field(1, ge=1)
    num_reference: int = Field(1, ge=1)
    max_steps: int = Field(40, ge=1)

    @model_validator(mode="after")
    def _references_fit(self) -> ParticleFilterConfig:
        if self.num_iterations > 1 and self.num_reference >= self.num_particles:
            raise ValueError(
                f"num_reference ({self.num_reference}) must be below "
                f"num_particles ({self.num_particles})"
            )
        return self


class ParticleFilter:
    def __init__(self, config: ParticleFilterConfig) -> None:
        self.config = config
        self.sweep = 0
        self.step = 0
        self.particles: list[str] = []  # this sweep's free particles (node ids)
        self.aside: list[str] = []  # finished particles set aside (resample_finished=False)
        self.references: list[list[str]] = []  # trajectories, node ids from step 1
        self._pending: list[Expansion] = []
        self._sweep_over = True
        self._finished_all = False
        self._log: list[dict[str, object]] = []

    @property
    def num_free(self) -> int:
        return self.config.num_particles - len(self.references)

    def select(self, ctx: RunContext) -> Sequence[Expansion]:
        if self._finished_all:
            return []
        if self._sweep_over:
            self._sweep_over = False
            self.step, self.particles, self.aside = 0, [], []
            return [Expansion(node_id=ctx.root.id, num_children=self.num_free, until="step")]
        pending, self._pending = self._pending, []
        return pending

    def observe(self, ctx: RunContext, children: Sequence[Node]) -> None:
        self.step += 1
        carried = [i for i in self.particles if _finished(ctx.graph[i])]
        for child in children:
            if not _finished(child) and child.depth >= self.config.max_steps:
                _stop(ctx, child)
        free = [*carried, *(c.id for c in children)]
        if not self.config.resample_finished:
            self.aside.extend(i for i in free if _finished(ctx.graph[i]))
            free = [i for i in free if not _finished(ctx.graph[i])]
        self.particles = free
        if not any(not _finished(ctx.graph[i]) for i in free):
            self._end_sweep(ctx)
            return
        pool = [*free, *(self._reference_at(r) for r in self.references)]
        draws = self._resample(
            ctx, pool, self.num_free if self.config.resample_finished else len(free)
        )
        self.particles = [pool[d] for d in draws]
        counts: dict[str, int] = {}
        for node_id in self.particles:
            if not _finished(ctx.graph[node_id]):
                counts[node_id] = counts.get(node_id, 0) + 1
        self._pending = [
            Expansion(node_id=i, num_children=n, until="step") for i, n in counts.items()
        ]
        self._log.append(
            {"sweep": self.sweep, "step": self.step, "pool": pool, "drawn": list(self.particles)}
        )
        self._report(ctx)
        if not self._pending:
            self._end_sweep(ctx)

    def done(self, ctx: RunContext) -> bool:
        return self._finished_all

    def best(self, ctx: RunContext) -> Node | None:
        nodes = [ctx.graph[i] for i in self._final_pool()]
        pool = [n for n in nodes if _finished(n)] or nodes
        if not pool:
            return None
        rewards = [_reward(n) for n in pool]
        if self.config.selection == "argmax":
            return pool[max(range(len(pool)), key=lambda i: (rewards[i], -i))]
        weights = particle_weights(rewards, self.config.temperature, self.config.eps)
        rng = random.Random(ctx.seed_for(f"particle_filter:select:{self.sweep}", self.step))
        return pool[multinomial(weights, 1, rng)[0]]

    def _reference_at(self, trajectory: list[str]) -> str:
        return trajectory[min(self.step, len(trajectory)) - 1]

    def _resample(
        self, ctx: RunContext, pool: list[str], num_draws: int, purpose: str = "step"
    ) -> list[int]:
        rewards = [_reward(ctx.graph[i]) for i in pool]
        weights = particle_weights(rewards, self.config.temperature, self.config.eps)
        for node_id, weight in zip(pool, weights, strict=True):
            ctx.graph[node_id].attrs.stats["weight"] = weight  # type: ignore[union-attr]
        rng = random.Random(ctx.seed_for(f"particle_filter:{purpose}:{self.sweep}", self.step))
        return multinomial(weights, num_draws, rng)

    def _final_pool(self) -> list[str]:
        return [*self.particles, *self.aside, *(r[-1] for r in self.references)]

    def _end_sweep(self, ctx: RunContext) -> None:
        self._sweep_over = True
        self.sweep += 1
        if self.sweep >= self.config.num_iterations:
            self._finished_all = True
            self._report(ctx)
            return
        pool = self._final_pool()
        draws = self._resample(ctx, pool, self.config.num_reference, "reference")
        self.references = [_trajectory(ctx, pool[d]) for d in draws]
        self._report(ctx)

    def _report(self, ctx: RunContext) -> None:
        ctx.meta["search"] = {
            "strategy": "particle_gibbs" if self.config.num_iterations > 1 else "particle_filter",
            "resampling": self._log,
            "references": [list(r) for r in self.references],
        }


def _finished(node: Node) -> bool:
    return bool(getattr(node.attrs, "finished", False))


def _reward(node: Node) -> float:
    return node.score if node.score is not None else 0.0


def _trajectory(ctx: RunContext, node_id: str) -> list[str]:
    return [n.id for n in ctx.graph.ancestors(node_id)[1:]] + [node_id]


def _stop(ctx: RunContext, node: Node) -> None:
    text = "".join(n.text for n in ctx.graph.ancestors(node.id)[1:]) + node.text
    node.attrs.finished = True  # type: ignore[union-attr]
    node.attrs.answer = extract_answer(text)  # type: ignore[union-attr]


@hookimpl
def orchestrator_add_strategies() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="particle_filter",
            factory=ParticleFilter,
            config_model=ParticleFilterConfig,
            description="particle filtering (particle Gibbs with num_iterations > 1) over steps",
        ),
    ]
