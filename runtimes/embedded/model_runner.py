"""The model runner: turns a step's chunks into tensors, runs the forward, returns logits.

It is the only place that touches the model and the KV pool, so it owns the counters the
tests assert: ``tokens_computed`` (every token that went through the forward: prefill,
re-encode and decode alike) and ``blocks_copied`` (copy-on-write of partial blocks). Rows
the configured backend cannot serve (views: several pieces) go to the segment backend; the
flat token order puts each backend's rows in one contiguous run.
"""

from __future__ import annotations

import math

import torch

from .attention import AttentionBackend, KVCache, Piece, Rope, Row
from .model import CausalLM, StepInputs
from .scheduler import Chunk
from .sequence import Sequence, segment_layout

__all__ = ["ModelRunner"]


class ModelRunner:
    def __init__(
        self,
        model: CausalLM,
        cache: KVCache,
        rope: Rope,
        backend: AttentionBackend,
        segment_backend: AttentionBackend,
    ) -> None:
        self.model = model
        self.cache = cache
        self.rope = rope
        self.backend = backend
        self.segment_backend = segment_backend
        self.device = cache.k.device
        self.dtype = cache.k.dtype
        self.tokens_computed = 0
        self.blocks_copied = 0

    def copy_block(self, src: int, dst: int, num_tokens: int) -> None:
        self.cache.copy_block(src, dst, num_tokens)
        self.blocks_copied += 1

    def slots(self, seq: Sequence, start: int, end: int) -> torch.Tensor:
        """Pool slots of positions ``[start, end)`` of ``seq``. # -> [end - start] int64"""
        bs = self.cache.block_size
        first = start // bs
        table = torch.tensor(seq.block_table[first : math.ceil(end / bs)], dtype=torch.int64)
        slots = (table[:, None] * bs + torch.arange(bs)).view(-1)
        return slots[start - first * bs : end - first * bs].to(self.device)

    def _pieces(self, chunk: Chunk) -> tuple[Piece, ...]:
        seq = chunk.seq
        own = Piece(self.slots(seq, 0, chunk.end))
        if not seq.segments:
            return (own,)
        placed, own_offset = segment_layout(seq, computed=True)
        # A key stored at s0 + j and placed at view position v0 + j is read by rotating the
        # query from view position own_offset + p to p + (own_offset - v0 + s0).
        foreign = tuple(
            Piece(self.slots(src, s0, end), own_offset - offset + s0, causal=False)
            for src, s0, end, offset in placed
        )
        return (*foreign, own)

    @torch.inference_mode()
    def run(self, chunks: list[Chunk], logit_positions: list[range]) -> list[torch.Tensor | None]:
        """Compute ``chunks``; return, per chunk, the logits at ``logit_positions`` (fp32)."""
        rows: list[tuple[int, Row]] = []
        for index, chunk in enumerate(chunks):
            row = Row(0, chunk.end - chunk.start, chunk.start, self._pieces(chunk))
            rows.append((index, row))
        rows.sort(key=lambda item: not self.backend.supports(item[1]))
        ids, positions, slot_mapping, flat_start = [], [], [], [0] * len(chunks)
        groups: list[tuple[AttentionBackend, int, int, object]] = []
        offset = 0
        for backend in (self.backend, self.segment_backend):
            members = [
                (i, r) for i, r in rows if (backend is self.backend) == self.backend.supports(r)
            ]
            if not members:
                continue
            start, placed = offset, []
            for index, row in members:
                chunk = chunks[index]
                flat_start[index] = offset
                placed.append(Row(offset - start, row.num_tokens, row.first_position, row.pieces))
                ids.append(torch.tensor(chunk.seq.token_ids[chunk.start : chunk.end]))
                positions.append(torch.arange(chunk.start, chunk.end))
                slot_mapping.append(row.pieces[-1].slots[chunk.start : chunk.end])
                offset += row.num_tokens
            groups.append((backend, start, offset, backend.plan(placed, self.dtype)))
        pos = torch.cat(positions).to(self.device)
        step = StepInputs(
            input_ids=torch.cat(ids).to(self.device),
            positions=pos,
            slot_mapping=torch.cat(slot_mapping),
            groups=groups,
        )
        hidden = self.model(step, self.cache, self.rope.cos_sin(pos, self.dtype))
        self.tokens_computed += offset
        wanted = [
            flat_start[i] + p - chunks[i].start
            for i in range(len(chunks))
            for p in logit_positions[i]
        ]
        if not wanted:
            return [None] * len(chunks)
        logits = self.model.logits(hidden[torch.tensor(wanted, device=self.device)])
        out: list[torch.Tensor | None] = []
        cursor = 0
        for wanted_here in logit_positions:
            n = len(wanted_here)
            out.append(logits[cursor : cursor + n] if n else None)
            cursor += n
        return out
