"""The ``hogwild`` graph driver: workers in lockstep, then the s1 finisher.

Each worker is a task owning its ``worker`` node and, one after the other, its ``step`` nodes
(a step node holds the step's opening and tokens; it ends when the step moves into the common
history). The driver owns the shared state: each lockstep step it hands every worker one turn
(:meth:`Engine.advance`), waits for all of them, then settles their tokens in worker order on
the :class:`~.board.Board` (step boundaries, openings, the self-check counter) and relinks the
cache (:meth:`Engine.move`). The collaboration ends when a finished step states a
``\\boxed{}`` answer, a worker emits EOS, ``max_steps`` lockstep steps are done, or the token
budget would leave no room for the finisher; then the answer is the boxed one in the
generated text, else the finisher's: greedy decoding after the s1 prompt, stopping at the
closing brace (``inference_lib``'s early stop).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from orchestrator import (
    AnswerAttrs,
    BudgetExhausted,
    Capability,
    Completion,
    GenerateRequest,
    Prompt,
    SamplingParams,
)

from .board import Board
from .config import HogwildConfig
from .engines import Engine, Reprompt, SharedCache
from .layout import Pieces, finisher_prompt
from .prompt import BOXED, SEP, final_answer, seed_text
from .workers import Turn, WorkerTasks

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["HogwildGraph"]

_NEEDS = Capability.SHARED_SEGMENTS | Capability.SEQUENCE_HANDLES | Capability.TOKEN_INJECTION


class HogwildGraph:
    def __init__(self, config: HogwildConfig) -> None:
        self.config = config

    async def run(self, ctx: RunContext) -> str | None:
        return await _Collaboration(ctx, self.config).run()


class _Collaboration:
    def __init__(self, ctx: RunContext, config: HogwildConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.names = config.names
        self.board = Board(
            self.names,
            config.self_check_every,
            boundary_by_text=config.step_boundary == "text",
            numeric_answer=config.numeric_answer,
        )
        self.runtime_name = ctx.default_runtime
        self.runtime = ctx.runtime(self.runtime_name)
        self.shared = _NEEDS in self.runtime.capabilities and not config.force_fallback
        self.tasks = WorkerTasks(ctx, config)
        self.num_steps = 0

    async def run(self) -> str | None:
        ctx, config = self.ctx, self.config
        pieces = await Pieces.build(
            self.runtime, ctx.question, self.names, suggestions=config.suggestions
        )
        engine: Engine
        if self.shared:
            engine = SharedCache(self.runtime_name, self.runtime, pieces, len(self.names))
        else:
            engine = Reprompt(pieces, self.board, config.fallback_every)
            ctx.report_fallback(
                f"hogwild: no shared KV segments on runtime {self.runtime_name!r}; each worker "
                f"is re-prompted with its combined view every {config.fallback_every} tokens "
                "(approximate: workers see each other only between rounds)"
            )
        self.tasks.add_nodes()
        try:
            if isinstance(engine, SharedCache):
                await engine.open()
            await self._collaborate(engine)
        except* BudgetExhausted as group:
            ctx.stopped_by = ctx.stopped_by or _first_budget(group)
            self.board.finished = self.board.finished or "budget"
        finally:
            await engine.release()
        answer = await self._finish(pieces)
        self._report()
        return answer

    async def _collaborate(self, engine: Engine) -> None:
        turns = []
        for w in range(len(self.names)):
            text = seed_text(self.names, w)
            ids = tuple(await self.runtime.tokenize(text))
            self.board.open(w, ids, text)
            turns.append(Turn(1, text, ids, ids, 1))
        pairs = [anyio.create_memory_object_stream[Turn](1) for _ in self.names]
        results = [anyio.create_memory_object_stream[Completion](1) for _ in self.names]
        async with AsyncExitStack() as streams, anyio.create_task_group() as tg:
            for w in range(len(self.names)):
                turn_send, turn_receive = pairs[w]
                result_send, result_receive = results[w]
                for stream in (turn_send, result_receive):
                    streams.enter_context(stream)
                tg.start_soon(self.tasks.run, w, engine, turn_receive, result_send)
            try:
                await self._drive(engine, turns, [s for s, _ in pairs], [r for _, r in results])
            finally:
                for send, _ in pairs:
                    send.close()  # the workers see the end of their turns and finish

    async def _drive(
        self,
        engine: Engine,
        turns: list[Turn],
        send: list[MemoryObjectSendStream[Turn]],
        receive: list[MemoryObjectReceiveStream[Completion]],
    ) -> None:
        board, config = self.board, self.config
        while board.finished is None:
            budget = self._turn_tokens()
            if budget == 0:
                break
            for w, turn in enumerate(turns):
                send[w].send_nowait(turn._replace(max_tokens=budget))  # buffered: never blocks
            completions = []
            for stream in receive:
                try:
                    completions.append(await stream.receive())
                except anyio.EndOfStream:  # the worker failed and its node recorded why
                    board.finished = "worker_failed"
                    return
            moved = []
            for w, completion in enumerate(completions):
                turns[w] = await self._settle(w, completion)
                if turns[w].opening:
                    moved.append(w)
            if moved:
                await engine.move(moved)
            self.num_steps += max(len(c.token_ids) for c in completions) if not self.shared else 1
            if board.finished is None and self.num_steps >= config.max_steps:
                board.finished = "max_steps"

    async def _settle(self, w: int, completion: Completion) -> Turn:
        board = self.board
        eos = completion.finish_reason == "stop" and completion.matched_stop != SEP
        last = completion.text if self.shared else (SEP if completion.matched_stop == SEP else "")
        num_finished = len(board.history)
        opening = board.settle(
            w, completion.token_ids, completion.text, boundary_token=last, eos=eos
        )
        if len(board.history) > num_finished:
            step = self.tasks.steps[w]
            board.history[-1].node_id = step.id if step is not None else None
        if opening is None:
            return Turn(board.step_index[w], "", (), (), 1)
        ids = tuple(await self.runtime.tokenize(opening.text))
        board.open(w, ids, opening.text)
        board.fed(1 + len(ids))
        return Turn(opening.index, opening.text, ids, ids, 1)

    def _turn_tokens(self) -> int:
        """Tokens each worker may sample this turn: 1 in lockstep, up to ``fallback_every``
        in the fallback; 0 when the token budget would leave nothing for the finisher."""
        config = self.config
        wanted = 1 if self.shared else min(config.fallback_every, config.max_steps - self.num_steps)
        left = self.ctx.budget.tokens_left
        if left is None:
            return wanted
        room = (left - config.finisher_max_tokens) // len(self.names)
        if room < 1:
            limit = self.ctx.config.budget.max_generated_tokens or 0
            used = self.ctx.budget.usage.generated_tokens
            self.ctx.stopped_by = BudgetExhausted("max_generated_tokens", used, limit)
            self.board.finished = "budget"
            return 0
        return min(wanted, room)

    async def _finish(self, pieces: Pieces) -> str | None:
        ctx, config = self.ctx, self.config
        numeric = config.numeric_answer
        answer = final_answer(self.board.generated_text(), numeric=numeric)
        node = ctx.add_node("answer", self.tasks.nodes, AnswerAttrs())
        try:
            async with ctx.running(node):
                if answer is None and config.finisher_max_tokens > 0:
                    sampling = SamplingParams(
                        max_new_tokens=config.finisher_max_tokens,
                        temperature=0.0,
                        stop=("}",),
                        include_stop=True,
                    )
                    prompt = Prompt(token_ids=tuple(finisher_prompt(pieces, self.board)))
                    result = await ctx.generate(
                        node, GenerateRequest(prompt=prompt, sampling=sampling)
                    )
                    answer = final_answer(BOXED + result.completions[0].text, numeric=numeric)
                node.attrs = AnswerAttrs(answer=answer)
        except BudgetExhausted as exc:
            ctx.stopped_by = ctx.stopped_by or exc
        ctx.set_answer(answer, node)
        return answer

    def _report(self) -> None:
        board = self.board
        self.ctx.meta["hogwild"] = {
            "mode": "shared_segments" if self.shared else "fallback",
            "workers": list(self.names),
            "inference_steps": self.num_steps,
            "stop": board.finished,
            "self_checks": board.num_self_checks,
            "history": [s.node_id for s in board.history],
        }


def _first_budget(group: BaseExceptionGroup[BudgetExhausted]) -> BudgetExhausted:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, BudgetExhausted)
    return exc
