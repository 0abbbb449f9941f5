"""How workers read each other: a real shared cache, or the re-prompting fallback.

:class:`SharedCache` (runtimes with ``Capability.SHARED_SEGMENTS``): the common prompt and the
headers are prefilled once, each into its own handle, context-free as the reference fills its
cache blocks; each worker decodes on a *view* whose segments are the common prompt, the finished
steps, the headers and the other workers' views, growing as they decode. A lockstep step asks
every worker's view for one token (the runtime batches the concurrent calls), so the only new
KV per step is one token per worker, plus a new step's opening. At a step boundary the
finished view becomes one more history segment of every layout (a relink, no KV copied) and
the worker continues on a fresh view that starts with the new step's opening. The token that
ended the step is computed in the finished view, next to the new opening (the same tokens
per forward as the reference, which feeds that token again at the head of the new block
because its cache block is appended to the history before the token's KV exists); the
history segment reads it once computed.

:class:`Reprompt` (any runtime): every ``fallback_every`` tokens, each worker is prompted with
its whole combined view as token ids and writes up to that many tokens, stopping at the step
separator. Workers see each other's progress only at those round boundaries, and every round
re-reads the view (prefix caching helps where the runtime has it): approximate and slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from orchestrator import GenerateRequest, Node, Prompt, SamplingParams, SegmentSpec, SequenceHandle

from .board import Board
from .layout import Pieces, combined_view, others_order
from .prompt import SEP

if TYPE_CHECKING:
    from orchestrator import Completion, RunContext

__all__ = ["Engine", "Reprompt", "SharedCache"]


class Engine(Protocol):
    async def advance(
        self,
        ctx: RunContext,
        worker: int,
        node: Node,
        forced: Sequence[int],
        sampling: SamplingParams,
    ) -> Completion:
        """One worker's turn: feed ``forced`` (a new step's tokens) and sample."""
        ...

    async def move(self, workers: Sequence[int]) -> None:
        """After a lockstep step: these workers' steps moved into the history."""
        ...

    async def release(self) -> None: ...


class SharedCache:
    def __init__(self, runtime_name: str, runtime: Any, pieces: Pieces, num_workers: int) -> None:
        """``runtime`` implements ``SupportsSequences`` and ``SupportsSegments``."""
        self.runtime_name = runtime_name
        self.rt = runtime
        self.pieces = pieces
        self.num_workers = num_workers
        self.handles: list[SequenceHandle] = []
        self.history: list[SegmentSpec] = []
        self.views: list[SequenceHandle | None] = [None] * num_workers
        #: Tokens each view holds of its own (forced and sampled).
        self.own_len = [0] * num_workers
        self._linked: list[tuple[tuple[int, int, int | None], ...]] = [()] * num_workers
        self._fixed: dict[str, SequenceHandle] = {}

    async def open(self) -> None:
        """Prefill the common prompt and the headers; open one view per worker."""
        pieces = {
            "common": self.pieces.prompt,
            "others_header": self.pieces.others_header,
            "own_header": self.pieces.own_header,
        }
        if self.num_workers > 2:
            pieces["pivot"] = self.pieces.pivot
        for name, ids in pieces.items():
            handle = await self.rt.open_sequence(Prompt(token_ids=tuple(ids)))
            self.handles.append(handle)
            self._fixed[name] = handle
        for worker in range(self.num_workers):
            await self._new_view(worker)
        await self._sync()

    def layout(self, worker: int) -> list[SegmentSpec]:
        fixed = self._fixed
        segments = [SegmentSpec(handle=fixed["common"]), *self.history]
        segments.append(SegmentSpec(handle=fixed["others_header"]))
        others = [v for v in others_order(self.num_workers, worker) if self.views[v] is not None]
        for i, other in enumerate(others):
            segments.append(SegmentSpec(handle=self.views[other]))
            if i < len(others) - 1:
                segments.append(SegmentSpec(handle=fixed["pivot"]))
        segments.append(SegmentSpec(handle=fixed["own_header"]))
        return segments

    async def advance(
        self,
        ctx: RunContext,
        worker: int,
        node: Node,
        forced: Sequence[int],
        sampling: SamplingParams,
    ) -> Completion:
        view = self.views[worker]
        assert view is not None
        if forced:
            await view.extend(forced)
            self.own_len[worker] += len(forced)
        completion = await ctx.generate_on(node, view, sampling, runtime=self.runtime_name)
        self.own_len[worker] += len(completion.token_ids)
        return completion

    async def move(self, workers: Sequence[int]) -> None:
        """Relink: each finished view joins the history; the worker gets a fresh view; every
        layout is brought up to date."""
        finished = [self.views[worker] for worker in workers]
        for worker, view in zip(workers, finished, strict=True):
            self.history.append(SegmentSpec(handle=view, end=self.own_len[worker]))
        for worker in workers:
            await self._new_view(worker)
        await self._sync()
        for view in finished:
            await self._unlink(view)  # its KV is computed: what it read no longer matters

    async def release(self) -> None:
        """Views read each other, so their references form cycles that reference counting
        never frees: every live view first drops its reads, then every handle is released."""
        with anyio.CancelScope(shield=True):
            try:
                for view in self.views:
                    if view is not None:
                        await self._unlink(view)
            finally:
                for handle in reversed(self.handles):
                    await handle.release()
                self.handles.clear()

    async def _unlink(self, view: SequenceHandle | None) -> None:
        assert view is not None
        await view.relink([SegmentSpec(handle=self._fixed["common"])])

    async def _new_view(self, worker: int) -> None:
        segments = self.layout(worker)
        view = await self.rt.view(segments)
        self.handles.append(view)
        self.views[worker] = view
        self.own_len[worker] = 0
        self._linked[worker] = _key(segments)

    async def _sync(self) -> None:
        for worker, view in enumerate(self.views):
            segments = self.layout(worker)
            if view is not None and _key(segments) != self._linked[worker]:
                await view.relink(segments)
                self._linked[worker] = _key(segments)


def _key(segments: Sequence[SegmentSpec]) -> tuple[tuple[int, int, int | None], ...]:
    return tuple((id(s.handle), s.start, s.end) for s in segments)


class Reprompt:
    def __init__(self, pieces: Pieces, board: Board, every: int) -> None:
        self.pieces = pieces
        self.board = board
        self.every = every

    async def advance(
        self,
        ctx: RunContext,
        worker: int,
        node: Node,
        forced: Sequence[int],
        sampling: SamplingParams,
    ) -> Completion:
        """``forced`` is already part of the board's current step, so of the prompt."""
        ids = combined_view(self.pieces, self.board, worker)
        sampling = sampling.model_copy(
            update={
                "max_new_tokens": min(self.every, sampling.max_new_tokens),
                "stop": (SEP,),
                "include_stop": True,
            }
        )
        request = GenerateRequest(prompt=Prompt(token_ids=tuple(ids)), sampling=sampling)
        result = await ctx.generate(node, request)
        return result.completions[0]

    async def move(self, workers: Sequence[int]) -> None:
        return None

    async def release(self) -> None:
        return None
