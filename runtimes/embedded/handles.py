"""Sequence handles and views: live sequences whose KV stays resident between calls.

A handle wraps one resident :class:`Sequence` and is its holder: ``release`` drops the
hold, and the KV is freed once no view reads the sequence either. Every operation runs its
KV bookkeeping under the engine's step lock, then drives steps until the tokens it added
are computed; cancellation cannot leave a half-registered operation behind.

A view's ``token_ids`` are its *own* tokens (the segment it writes); other views can place
them as a segment, which is how Hogwild! workers read each other's growing steps.
``context_token_ids`` is the whole context the view reads, i.e. what recomputing it from
scratch would have to encode. Generated tokens stay in the handle's sequence (their KV is
resident) even when the returned completion leaves a matched stop out.

The handle carries a grammar matcher: a ``generate`` with a grammar starts one (or, with
the same grammar, continues it), generated and forced tokens advance it, a dropped range
replays it without those tokens, and ``generate`` without a grammar detaches it. Forced
text must fit the grammar where it is injected, e.g. a schema's free-text field for a
tool result; otherwise ``extend`` is rejected and nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

from orchestrator import Completion, ContextOverflow, RequestRejected, SamplingParams, SegmentSpec

from .grammar import GrammarState
from .sequence import SegmentRef, segment_layout
from .sequence import Sequence as Seq

if TYPE_CHECKING:
    from .runtime import EmbeddedRuntime

__all__ = ["EmbeddedSequenceHandle", "open_handle", "open_view"]

PROVIDER = "orchestrator.embedded"


def _reject(message: str) -> RequestRejected:
    return RequestRejected(message, runtime=PROVIDER)


class EmbeddedSequenceHandle:
    def __init__(self, runtime: EmbeddedRuntime, seq: Seq) -> None:
        self._rt = runtime
        self._engine = runtime.engine
        self.seq = seq
        self.grammar: GrammarState | None = None
        self._grammar_start = 0  # index of the first token the matcher has seen
        self._released = False

    @property
    def token_ids(self) -> list[int]:
        return list(self.seq.token_ids)

    @property
    def context_token_ids(self) -> list[int]:
        placed, _ = segment_layout(self.seq, computed=False)
        ids = [t for src, start, end, _ in placed for t in src.token_ids[start:end]]
        return ids + self.seq.token_ids

    @property
    def context_length(self) -> int:
        return segment_layout(self.seq, computed=False)[1] + len(self.seq.token_ids)

    def _check(self) -> None:
        self._rt.check_open()
        if self._released:
            raise _reject("the sequence handle was released")
        if self.seq.gen is not None:
            raise _reject("the sequence is already generating")
        self.seq.error = None  # a failure was reported by the operation that met it

    async def _settle(self) -> None:
        seq = self.seq
        await self._engine.wait_until(
            lambda: seq.num_computed == len(seq.token_ids) and seq.next_logits is not None,
            check=seq.raise_error,
        )

    async def generate(self, sampling: SamplingParams) -> Completion:
        self._check()
        if sampling.n != 1:
            raise _reject(f"a sequence handle generates one sample at a time, got n={sampling.n}")
        if not self.seq.token_ids:
            raise _reject("the sequence has no token of its own yet: extend it before generating")
        if self.context_length >= self._rt.max_context:
            raise ContextOverflow(self.context_length, self._rt.max_context)
        params = self._rt.clamp(sampling, self.context_length)
        if params.grammar is None:
            self.grammar = None
        elif self.grammar is None or self.grammar.grammar != params.grammar:
            self.grammar = self._rt.grammar_state(params)
            self._grammar_start = len(self.seq.token_ids)
        gen = self._rt.new_generation(params.model_copy(update={"grammar": None}))
        gen.grammar, gen.seq = self.grammar, self.seq
        async with self._engine.lock():
            self.seq.gen = gen
        try:
            await self._engine.wait_until(lambda: gen.finished, check=self.seq.raise_error)
            return gen.completion()
        finally:
            with anyio.CancelScope(shield=True):
                async with self._engine.lock():
                    gen.abort()
                    self.seq.gen = None

    async def extend(self, token_ids: Sequence[int]) -> None:
        self._check()
        ids = list(token_ids)
        if not ids:  # nothing to compute; queueing it would wait for a step that never comes
            return
        self._rt.check_tokens(ids)
        if self.context_length + len(ids) >= self._rt.max_context:
            raise ContextOverflow(self.context_length + len(ids), self._rt.max_context)
        previous = None if self.grammar is None else list(self.grammar.accepted)
        if self.grammar is not None and not self.grammar.accepts(ids):
            raise _reject("the forced tokens do not fit the grammar at this point")
        try:
            async with self._engine.lock():
                self.seq.append(ids)
        except BaseException:
            if self.grammar is not None and previous is not None:
                self.grammar.replay(previous)
            raise
        await self._settle()

    async def fork(self, n: int) -> list[EmbeddedSequenceHandle]:
        self._check()
        children: list[EmbeddedSequenceHandle] = []
        try:
            async with self._engine.lock():
                for _ in range(n):
                    child = EmbeddedSequenceHandle(
                        self._rt, self._engine.fork(self.seq, resident=True)
                    )
                    child.seq.holders = 1
                    child.grammar = None if self.grammar is None else self.grammar.copy()
                    child._grammar_start = self._grammar_start
                    children.append(child)
        except BaseException:
            for child in children:
                await child.release()
            raise
        return children

    async def drop_range(self, start: int, end: int) -> None:
        self._check()
        tokens = self.seq.token_ids
        if not 0 <= start <= end <= len(tokens):
            raise _reject(
                f"drop range [{start}, {end}) is outside the sequence of {len(tokens)} tokens"
            )
        if self.seq.holders > 1:
            raise _reject("cannot drop a range from a sequence that views are reading")
        if start == end:
            return
        tail = tokens[end:]
        if self.grammar is not None:
            g0 = self._grammar_start
            new_start = g0 if end <= g0 else min(g0, start)
            kept = tokens[:start] + tail
            previous = list(self.grammar.accepted)
            try:
                self.grammar.replay(kept[new_start:] if end > g0 else previous)
            except ValueError:
                self.grammar.replay(previous)
                raise _reject("the tokens after the dropped range do not fit the grammar") from None
            self._grammar_start = new_start if end > g0 else g0 - (end - start)
        async with self._engine.lock():
            self._engine.truncate(self.seq, max(start if tail else start - 1, 0))
            self.seq.token_ids = tokens[:start] + tail
        if self.seq.token_ids:
            await self._settle()

    async def relink(self, segments: Sequence[SegmentSpec]) -> None:
        """Views only: replace the segments this view reads (a Hogwild! step moving into the
        common history). Its own tokens keep their KV, stored at their own positions and read
        by query rotation, so nothing is copied or recomputed; logits already computed keep
        the layout they were computed under."""
        self._check()
        if not self.seq.is_view:
            raise _reject("relink needs a view (a handle made by view())")
        refs = _segment_refs(self._rt, list(segments))
        async with self._engine.lock():
            for ref in refs:
                ref.source.holders += 1
            old, self.seq.segments = self.seq.segments, refs
            for ref in old:
                self._engine.release(ref.source)

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        with anyio.CancelScope(shield=True):
            async with self._engine.lock():
                self._engine.release(self.seq)


async def _admit_resident(
    runtime: EmbeddedRuntime, seq: Seq, *, queue: bool
) -> EmbeddedSequenceHandle:
    handle = EmbeddedSequenceHandle(runtime, seq)
    seq.holders = 1
    try:
        async with runtime.engine.lock():
            if queue:
                runtime.engine.scheduler.add(seq)
            else:
                runtime.engine.scheduler.add_running(seq)
        if seq.token_ids:
            await handle._settle()
    except BaseException:
        await handle.release()
        raise
    return handle


async def open_handle(runtime: EmbeddedRuntime, token_ids: list[int]) -> EmbeddedSequenceHandle:
    runtime.check_prompt(token_ids)
    seq = runtime.engine.new_sequence(token_ids, resident=True)
    return await _admit_resident(runtime, seq, queue=True)


def _segment_refs(runtime: EmbeddedRuntime, segments: list[SegmentSpec]) -> list[SegmentRef]:
    if not segments:
        raise _reject("a view needs at least one segment")
    refs = []
    for i, spec in enumerate(segments):
        handle = spec.handle
        if not isinstance(handle, EmbeddedSequenceHandle) or handle._rt is not runtime:
            raise _reject(f"segment {i}: the handle does not belong to this runtime")
        if handle._released:
            raise _reject(f"segment {i}: the handle was released")
        size = len(handle.seq.token_ids)
        if not 0 <= spec.start <= (spec.end if spec.end is not None else size) <= size:
            raise _reject(
                f"segment {i}: range [{spec.start}, {spec.end}) is outside its {size} tokens"
            )
        refs.append(SegmentRef(handle.seq, spec.start, spec.end, spec.position_offset))
    return refs


async def open_view(
    runtime: EmbeddedRuntime, segments: list[SegmentSpec]
) -> EmbeddedSequenceHandle:
    refs = _segment_refs(runtime, segments)
    seq = runtime.engine.new_sequence([], resident=True, cacheable=False)
    seq.segments = refs
    async with runtime.engine.lock():
        for ref in refs:
            ref.source.holders += 1
    return await _admit_resident(runtime, seq, queue=False)
