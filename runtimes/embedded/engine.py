"""The engine: one step loop driven by its callers, plus the KV operations of handles.

There is no background task. Every caller waiting for progress calls :meth:`Engine.advance`:
if no step is running it takes the step lock and runs one step in a worker thread
(``anyio.to_thread.run_sync``, so the event loop keeps serving other callers while torch
computes); otherwise it waits for the running step to end. Each step advances *every*
active sequence of every caller (continuous batching), so it does not matter who drives.
Nothing can outlive its callers, and the runtime works under any anyio backend.

All state changes happen under the step lock: inside the step (worker thread) or in short
critical sections on the event loop (adding, cancelling, forking), never both at once.
A cancelled caller frees its blocks in a shielded section before its cancellation
completes. A step that fails marks the sequences it touched with the error, and frees
the request ones, so waiters raise instead of retrying forever.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import anyio
import anyio.lowlevel
import torch

from orchestrator import RequestRejected, RuntimeFailure

from .block_manager import BlockManager
from .model_runner import ModelRunner
from .sampler import sample
from .scheduler import Chunk, Scheduler
from .sequence import SeqStatus, Sequence

__all__ = ["Engine"]

PROVIDER = "orchestrator.embedded"


class Engine:
    def __init__(self, runner: ModelRunner, blocks: BlockManager, scheduler: Scheduler) -> None:
        self.runner = runner
        self.blocks = blocks
        self.scheduler = scheduler
        self._ids = itertools.count(1)
        self._sync: tuple[anyio.lowlevel.EventLoopToken, anyio.Lock, list[anyio.Event]] | None = (
            None
        )

    # -- driving -------------------------------------------------------------------------

    def _primitives(self) -> tuple[anyio.Lock, list[anyio.Event]]:
        # Bound to the running event loop; recreated if the runtime moves to another one.
        token = anyio.lowlevel.current_token()
        if self._sync is None or self._sync[0] != token:
            self._sync = (token, anyio.Lock(), [anyio.Event()])
        return self._sync[1], self._sync[2]

    def lock(self) -> anyio.Lock:
        return self._primitives()[0]

    async def advance(self) -> bool:
        """Return after at least one step has completed (running one if nobody is); False
        if the step this caller ran found nothing to do."""
        lock, stepped = self._primitives()
        event = stepped[0]
        # Queue on the lock rather than wait for the step event while it is held: the holder
        # may be a critical section (a finished caller freeing its blocks) that runs no step,
        # and waiters parked on the event would then never wake (#6: search rounds hung).
        async with lock:
            if event is not stepped[0]:
                return True
            try:
                return await anyio.to_thread.run_sync(self.step)
            finally:
                stepped[0] = anyio.Event()
                event.set()

    async def wait_until(self, done: Callable[[], bool], *, check: Callable[[], object]) -> None:
        """Drive steps until ``done()``; ``check()`` raises the error of a failed waiter."""
        while True:
            check()
            if done():
                return
            if not await self.advance() and not done():
                check()  # the idle step may have recorded why this waiter cannot progress
                raise RuntimeFailure(
                    "a sequence is waiting for work that no step can do", runtime=PROVIDER
                )

    def new_sequence(self, token_ids: list[int], **flags: bool) -> Sequence:
        seq_id = next(self._ids)
        return Sequence(seq_id, token_ids, arrival=seq_id, **flags)  # type: ignore[arg-type]

    # -- one step (worker thread, under the lock) -----------------------------------------

    def step(self) -> bool:
        """One forward over every sequence with work, then one token for every sequence
        ready to sample. Returns whether anything happened."""
        chunks = self.scheduler.schedule()
        for seq in list(self.scheduler.running):
            if seq.error is not None and seq.gen is not None:
                seq.gen.fail(seq.error)
            if seq.error is not None and not seq.resident:
                self.scheduler.free(seq)
        if chunks:
            self._compute(chunks)
        ready = [
            s
            for s in self.scheduler.running
            if s.gen is not None
            and not s.gen.finished
            and s.error is None
            and s.next_logits is not None
            and s.num_computed == len(s.token_ids)
        ]
        if ready:
            self._sample(ready)
        elif not chunks and self.scheduler.waiting and not self.scheduler.num_requests_running:
            # Nothing runs that could free blocks: the head of the queue can never start.
            head = self.scheduler.waiting[0]
            self.fail(
                head,
                RequestRejected(
                    f"a prompt of {len(head.token_ids)} tokens does not fit in the KV cache "
                    f"budget of {len(self.blocks.blocks)} blocks of {self.blocks.block_size} "
                    "tokens next to the live sequence handles",
                    runtime=PROVIDER,
                ),
            )
            return True
        return bool(chunks or ready)

    def _compute(self, chunks: list[Chunk]) -> None:
        wanted: list[range] = []
        for chunk in chunks:
            seq = chunk.seq
            if seq.logits_from is not None:
                wanted.append(range(max(chunk.start, seq.logits_from), chunk.end))
            elif chunk.end == len(seq.token_ids):
                wanted.append(range(chunk.end - 1, chunk.end))
            else:
                wanted.append(range(0))
        try:
            outputs = self.runner.run(chunks, wanted)
        except (RuntimeError, ValueError, IndexError) as exc:  # torch signals OOM etc. this way
            for chunk in chunks:
                error = RuntimeFailure(f"model step failed: {exc}", runtime=PROVIDER)
                error.__cause__ = exc
                self.fail(chunk.seq, error)
            return
        for chunk, logits in zip(chunks, outputs, strict=True):
            self.scheduler.commit(chunk)
            seq = chunk.seq
            if logits is None:
                continue
            if seq.logits_from is not None:
                seq.collected_logits.append(logits)
                if seq.num_computed == len(seq.token_ids) and not seq.resident:
                    self.scheduler.free(seq)  # scored: nothing more to do, free its slot
                continue
            if chunk.end == len(seq.token_ids):
                seq.next_logits = logits[-1]

    def _sample(self, ready: list[Sequence]) -> None:
        rows: list[Sequence] = []
        for seq in ready:
            rows.append(seq)
            for gen in seq.pending_forks:
                try:
                    child = self.fork(seq, resident=False)
                except RuntimeFailure as exc:
                    gen.fail(exc)
                    continue
                child.gen, gen.seq = gen, child
                rows.append(child)
            seq.pending_forks = []
        gens = [s.gen for s in rows if s.gen is not None]
        logits = torch.stack([s.next_logits for s in rows if s.next_logits is not None])
        masked = None
        if any(g.grammar is not None for g in gens):
            masked = logits.clone()
            for i, gen in enumerate(gens):
                if gen.grammar is not None:
                    gen.grammar.mask(masked[i])
        out = sample(logits, [g.params for g in gens], [g.generator for g in gens], masked)
        for i, (seq, gen) in enumerate(zip(rows, gens, strict=True)):
            token = out.token_ids[i]
            gen.append(token, out.logprobs[i], out.top_logprobs[i], out.entropies[i])
            seq.append([token])
            grammar = gen.grammar
            if grammar is not None and grammar.accept(token) and grammar.terminated:
                # The grammar is complete: the token it accepted last was its stop token.
                gen.finish_reason, gen.matched_stop = "stop", token
            if gen.finished and not seq.resident:
                self.scheduler.free(seq)

    def fail(self, seq: Sequence, error: BaseException) -> None:
        seq.error = error
        if seq.gen is not None:
            seq.gen.fail(error)
        if not seq.resident:
            self.scheduler.free(seq)

    # -- KV operations (event loop, under the lock) ---------------------------------------

    def _one_block(self) -> int:
        if self.blocks.num_available < 1:
            raise RuntimeFailure(
                f"the KV cache budget of {len(self.blocks.blocks)} blocks is exhausted",
                runtime=PROVIDER,
            )
        return self.blocks.allocate()

    def fork(self, seq: Sequence, *, resident: bool) -> Sequence:
        """A sequence sharing ``seq``'s computed full blocks; only the computed part of its
        partial last block is copied."""
        bs = self.blocks.block_size
        full, partial = divmod(seq.num_computed, bs)
        copy = self._one_block() if partial else None
        child = self.new_sequence(list(seq.token_ids), cacheable=seq.cacheable, resident=resident)
        child.arrival = seq.arrival
        child.segments = list(seq.segments)
        for ref in child.segments:
            ref.source.holders += 1
        for block_id in seq.block_table[:full]:
            self.blocks.acquire(block_id)
            child.block_table.append(block_id)
        if copy is not None:
            self.runner.copy_block(seq.block_table[full], copy, partial)
            child.block_table.append(copy)
        child.num_computed, child.num_cached = seq.num_computed, seq.num_cached
        child.next_logits = seq.next_logits
        self.scheduler.add_running(child)
        return child

    def truncate(self, seq: Sequence, keep: int) -> None:
        """Keep the KV of the first ``keep`` tokens; the block they end in becomes private
        (copied if shared), so what follows can be rewritten."""
        bs = self.blocks.block_size
        full, partial = divmod(keep, bs)
        if partial and not self.blocks.is_private(seq.block_table[full]):
            copy = self._one_block()
            self.runner.copy_block(seq.block_table[full], copy, partial)
            self.blocks.release(seq.block_table[full])
            seq.block_table[full] = copy
        self.scheduler.release_blocks(seq, keep=full + (1 if partial else 0))
        seq.num_computed = min(seq.num_computed, keep)
        seq.next_logits = None

    def release(self, seq: Sequence) -> None:
        """Drop one holder of ``seq``; free it (and release its segment sources) at zero."""
        seq.holders -= 1
        if seq.holders > 0:
            return
        if seq.gen is not None:
            seq.gen.abort()
        self.scheduler.free(seq)
        for ref in seq.segments:
            self.release(ref.source)

    def abort(self, seq: Sequence) -> None:
        """Stop a request sequence now and free its blocks."""
        if seq.gen is not None:
            seq.gen.abort()
        for gen in seq.pending_forks:
            gen.abort()
        if seq.status is not SeqStatus.FINISHED:
            self.scheduler.free(seq)
