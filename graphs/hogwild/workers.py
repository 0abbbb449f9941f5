"""The worker side of a Hogwild! run: one task per worker.

Each task owns its ``worker`` node and, one after the other, its ``step`` nodes: a step node
starts at the first turn of a new step (with the step's opening as its first text and
tokens), collects the tokens of each of the worker's turns, and ends when the driver hands
the worker a turn of the next step, or ends the run. A failed step (isolated by its node
scope) stops the worker, and the driver sees its result stream end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from anyio import EndOfStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from orchestrator import Completion, GraphError, Node, SamplingParams, StepAttrs, WorkerAttrs

from .config import HogwildConfig

if TYPE_CHECKING:
    from orchestrator import RunContext

    from .engines import Engine

__all__ = ["Turn", "WorkerTasks", "next_turn"]


class Turn(NamedTuple):
    """A worker's turn: its step index, the step's opening (first turn of a step only), the
    tokens to feed before sampling, and how many tokens it may sample."""

    step: int
    opening: str
    opening_ids: tuple[int, ...]
    forced: tuple[int, ...]
    max_tokens: int


class WorkerTasks:
    def __init__(self, ctx: RunContext, config: HogwildConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.names = config.names
        self.nodes: list[Node] = []
        #: Each worker's current (or last) step node.
        self.steps: list[Node | None] = [None] * len(self.names)

    def add_nodes(self) -> None:
        self.nodes = [
            self.ctx.add_node("worker", [self.ctx.root], WorkerAttrs(worker=w, name=name))
            for w, name in enumerate(self.names)
        ]

    async def run(
        self,
        w: int,
        engine: Engine,
        turns: MemoryObjectReceiveStream[Turn],
        results: MemoryObjectSendStream[Completion],
    ) -> None:
        async with turns, results, self.ctx.running(self.nodes[w]):
            turn = await next_turn(turns)
            while turn is not None:
                turn = await self._step(w, engine, turn, turns, results)

    async def _step(
        self,
        w: int,
        engine: Engine,
        first: Turn,
        turns: MemoryObjectReceiveStream[Turn],
        results: MemoryObjectSendStream[Completion],
    ) -> Turn | None:
        """Run one step from its ``first`` turn; return the first turn of the next step
        (None: the run is over)."""
        ctx = self.ctx
        index = first.step
        turn: Turn | None = first
        step = ctx.add_node("step", [self.nodes[w]], StepAttrs(worker=w, step=index))
        self.steps[w] = step
        ended = False
        async with ctx.running(step):
            step.text += first.opening
            step.token_ids.extend(first.opening_ids)
            calls = 0
            while turn is not None and turn.step == index:
                sampling = SamplingParams(
                    max_new_tokens=turn.max_tokens,
                    temperature=self.config.temperature,
                    top_p=self.config.top_p,
                    seed=ctx.seed_for(step.id, calls),
                )
                completion = await engine.advance(ctx, w, step, turn.forced, sampling)
                calls += 1
                await results.send(completion)
                turn = await next_turn(turns)
            ended = True
        if not ended:  # the step failed or was cancelled, and its scope isolated that
            raise GraphError(
                f"worker {self.names[w]} stopped: step {step.id} did not finish",
                graph="hogwild",
                node_id=step.id,
            )
        return turn


async def next_turn(turns: MemoryObjectReceiveStream[Turn]) -> Turn | None:
    try:
        return await turns.receive()
    except EndOfStream:
        return None
