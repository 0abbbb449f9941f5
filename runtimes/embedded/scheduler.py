"""The scheduler: which sequences compute which tokens in the next step.

Continuous batching: every admitted sequence with tokens to compute is in every step;
single-token rows (decodes) first, then prefill chunks in arrival order until the step's
token budget (``max_num_batched_tokens``) is spent, so a long prompt is cut into chunks and
never stalls the decoders (chunked prefill).

Admission is strictly FIFO: the head of the queue is admitted as soon as a batch slot and
its prompt's blocks are free, and nothing behind it jumps ahead (no longest-prefix-first:
that policy starves requests without cache hits). When a decode needs a block and none is
left, the youngest request is preempted (its blocks freed, itself re-queued at the front,
to be recomputed mostly from the prefix cache); handles are never preempted.

A sequence skips blocks the prefix index says another sequence computed, and stops before
an indexed block another live sequence is still computing (in-flight dedup); a block whose
producer went away is claimed by the first waiter.
"""

from __future__ import annotations

import collections
import dataclasses
import math

from orchestrator import RuntimeFailure

from .block_manager import BlockManager
from .sequence import SeqStatus, Sequence

__all__ = ["Chunk", "Scheduler"]

PROVIDER = "orchestrator.embedded"


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """Compute tokens ``[start, end)`` of ``seq`` in this step."""

    seq: Sequence
    start: int
    end: int


class Scheduler:
    def __init__(
        self, blocks: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int
    ) -> None:
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self.num_steps = 0
        self.num_preemptions = 0
        self._watermark = max(1, len(blocks.blocks) // 100)

    @property
    def num_requests_running(self) -> int:
        return sum(1 for s in self.running if not s.resident)

    def add(self, seq: Sequence) -> None:
        """Queue a request sequence for admission."""
        self.waiting.append(seq)

    def add_running(self, seq: Sequence) -> None:
        """Track a sequence that needs no admission (a fork or a view: blocks in hand)."""
        seq.status = SeqStatus.RUNNING
        self.running.append(seq)

    def free(self, seq: Sequence) -> None:
        """Release everything ``seq`` holds; it leaves the scheduler. Idempotent."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
        self.release_blocks(seq)
        seq.status = SeqStatus.FINISHED

    def release_blocks(self, seq: Sequence, keep: int = 0) -> None:
        """Drop ``seq``'s blocks from index ``keep`` on."""
        for block_id in seq.block_table[keep:]:
            block = self.blocks.blocks[block_id]
            if block.producer == seq.seq_id:
                block.producer = None
        self.blocks.release_all(seq.block_table[keep:])
        del seq.block_table[keep:]

    def ensure_blocks(self, seq: Sequence, num_tokens: int) -> bool:
        """Grow ``seq``'s table to hold ``num_tokens`` tokens; False if the pool is short."""
        needed = math.ceil(num_tokens / self.blocks.block_size) - len(seq.block_table)
        if needed > self.blocks.num_available:
            return False
        seq.block_table.extend(self.blocks.allocate() for _ in range(max(needed, 0)))
        return True

    def schedule(self) -> list[Chunk]:
        self.num_steps += 1
        while self.waiting and self.num_requests_running < self.max_num_seqs:
            if not self._admit(self.waiting[0]):
                break
            seq = self.waiting.popleft()
            seq.status, seq.admitted_step = SeqStatus.RUNNING, self.num_steps
            self.running.append(seq)
        self.running.sort(key=lambda s: s.arrival)
        singles: list[Chunk] = []
        prefills: list[Chunk] = []
        for seq in self.running:
            start, end = self._ready_range(seq)
            if end > start:
                (singles if end - start == 1 else prefills).append(Chunk(seq, start, end))
        budget = self.max_num_batched_tokens - len(singles)
        chunks = list(singles)
        for chunk in prefills:
            if budget <= 0:
                break
            end = min(chunk.end, chunk.start + budget)
            chunks.append(Chunk(chunk.seq, chunk.start, end))
            budget -= end - chunk.start
        return self._allocate(chunks)

    def _allocate(self, chunks: list[Chunk]) -> list[Chunk]:
        """Give every chunk the blocks it writes into, preempting the youngest requests when
        the pool is short. A resident that still cannot get blocks gets an error instead."""
        kept: list[Chunk] = []
        for chunk in chunks:
            seq = chunk.seq
            if seq.status is not SeqStatus.RUNNING:
                continue  # preempted for an earlier chunk of this step
            while not self.ensure_blocks(seq, chunk.end):
                requests = (s for s in self.running if not s.resident)
                victim = max(requests, key=lambda s: s.arrival, default=None)
                if victim is None:
                    seq.error = RuntimeFailure(
                        f"the KV cache budget of {len(self.blocks.blocks)} blocks is exhausted "
                        "by sequence handles, which are never preempted",
                        runtime=PROVIDER,
                    )
                    break
                self.preempt(victim)
                kept = [c for c in kept if c.seq is not victim]
                if victim is seq:
                    break
            else:
                kept.append(chunk)
        return kept

    def preempt(self, seq: Sequence) -> None:
        self.num_preemptions += 1
        self.running.remove(seq)
        self.release_blocks(seq)
        seq.num_computed = seq.num_cached = 0
        seq.next_logits = None
        seq.collected_logits.clear()
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)

    def _admit(self, seq: Sequence) -> bool:
        bs, blocks = self.blocks.block_size, self.blocks
        matched = blocks.match(seq.token_ids, seq.max_match_tokens) if seq.cacheable else []
        for block_id in matched:
            blocks.acquire(block_id)
        total = math.ceil(len(seq.token_ids) / bs)
        headroom = self._watermark + self.num_requests_running if self.running else 0
        if blocks.num_available - (total - len(matched)) < headroom:
            blocks.release_all(matched)
            return False
        seq.block_table = matched + [blocks.allocate() for _ in range(total - len(matched))]
        if seq.cacheable:  # index the prompt's fresh full blocks now: in-flight dedup
            parent = matched[-1] if matched else None
            for i in range(len(matched), len(seq.token_ids) // bs):
                key = tuple(seq.token_ids[i * bs : (i + 1) * bs])
                if not blocks.register(parent, key, seq.block_table[i], seq.seq_id):
                    break
                parent = seq.block_table[i]
        seq.num_computed = seq.num_cached = 0
        return True

    def _ready_range(self, seq: Sequence) -> tuple[int, int]:
        """Tokens ``seq`` can compute now: after blocks others computed, up to a block
        another live sequence is computing."""
        if seq.error is not None:
            return seq.num_computed, seq.num_computed
        bs, blocks, table = self.blocks.block_size, self.blocks.blocks, seq.block_table
        start, target = seq.num_computed, len(seq.token_ids)
        while start % bs == 0 and start + bs <= seq.max_match_tokens and start // bs < len(table):
            block = blocks[table[start // bs]]
            if block.node is None or not block.computed:
                break
            start += bs
            seq.num_cached += bs
        seq.num_computed = start
        end = start
        while end < target:
            if end // bs < len(table):
                block = blocks[table[end // bs]]
                if block.node is not None and not block.computed:
                    if block.producer is None:
                        block.producer = seq.seq_id
                    elif block.producer != seq.seq_id:
                        break
            end = min(target, (end // bs + 1) * bs)
        return start, end

    def commit(self, chunk: Chunk) -> None:
        """Record that ``chunk`` was computed: completed blocks become computed and, for
        cacheable sequences, indexed."""
        seq, bs, blocks = chunk.seq, self.blocks.block_size, self.blocks
        seq.num_computed = chunk.end
        for i in range(chunk.start // bs, chunk.end // bs):
            block_id = seq.block_table[i]
            if blocks.blocks[block_id].node is not None:
                blocks.mark_computed(block_id)
            elif seq.cacheable:
                blocks.mark_computed(block_id)
                parent = seq.block_table[i - 1] if i else None
                blocks.register(parent, tuple(seq.token_ids[i * bs : (i + 1) * bs]), block_id, None)
