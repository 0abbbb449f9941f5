"""A sequence: token ids, the block table holding their KV, and what it is being used for.

The engine's unit of work. A request sample, a sequence handle and a view are all
sequences; they differ in flags: ``resident`` ones (handles) are never preempted and keep
their KV between calls; ``segments`` make a sequence a *view* whose own tokens are read after
other sequences' KV (its KV depends on those, so it is never put in the prefix index).

Positions: a sequence stores each token's key rotated at the token's index in
``token_ids``; for a view that is the index in its own tokens. Whenever a step computes a
sequence up to its last token, the logits after it are kept in ``next_logits``: a handle at
rest can start generating (or be forked into children that each sample) without a forward,
and a prefix-cache hit never covers the last token, so those logits always exist.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .generation import Generation

__all__ = ["SegmentRef", "SeqStatus", "Sequence"]


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclasses.dataclass(eq=False, slots=True)
class SegmentRef:
    """Tokens ``[start, end)`` of ``source`` (``end=None``: its current end, growing) placed at
    view position ``position_offset`` (None: right after the previous segment)."""

    source: Sequence
    start: int = 0
    end: int | None = None
    position_offset: int | None = None


class Sequence:
    def __init__(
        self,
        seq_id: int,
        token_ids: list[int],
        *,
        arrival: int,
        cacheable: bool = True,
        resident: bool = False,
        segments: list[SegmentRef] | None = None,
    ) -> None:
        self.seq_id = seq_id
        self.token_ids = token_ids
        self.arrival = arrival
        self.cacheable = cacheable and not segments
        self.resident = resident
        self.segments = segments or []
        self.block_table: list[int] = []
        self.num_computed = 0
        self.num_cached = 0
        self.status = SeqStatus.WAITING
        self.gen: Generation | None = None
        #: Score mode: collect the logits of every position >= logits_from.
        self.logits_from: int | None = None
        self.collected_logits: list[torch.Tensor] = []
        #: Logits after the last token, once its KV is computed; None when stale.
        self.next_logits: torch.Tensor | None = None
        self.admitted_step: int | None = None
        #: Samples 2..n of a request: forked off this sequence when its prompt is computed.
        self.pending_forks: list[Generation] = []
        #: Handles and views keeping this sequence alive (a view holds its sources).
        self.holders = 0
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.seq_id}, tokens={len(self.token_ids)}, "
            f"computed={self.num_computed}, blocks={len(self.block_table)}, {self.status.value})"
        )

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    @property
    def is_view(self) -> bool:
        return bool(self.segments)

    @property
    def num_pending(self) -> int:
        return len(self.token_ids) - self.num_computed

    def append(self, token_ids: list[int]) -> None:
        self.token_ids.extend(token_ids)
        self.next_logits = None

    @property
    def max_match_tokens(self) -> int:
        """How many leading tokens may come from the prefix cache: never the last one (its
        logits are needed), nor any position whose logits are collected."""
        limit = len(self.token_ids) - 1
        return limit if self.logits_from is None else min(limit, self.logits_from)


def segment_layout(
    seq: Sequence, *, computed: bool
) -> tuple[list[tuple[Sequence, int, int, int]], int]:
    """Where a view's segments sit: ``(source, start, end, view offset)`` each, and the view
    position of its own first token (after the furthest-reaching segment).

    :param computed: clip growing segments to their computed KV (what attention can read)
        rather than to their tokens.
    """
    placed, cursor, own_offset = [], 0, 0
    for ref in seq.segments:
        src = ref.source
        limit = src.num_computed if computed else len(src.token_ids)
        end = limit if ref.end is None else min(ref.end, limit)
        end = max(end, ref.start)
        offset = cursor if ref.position_offset is None else ref.position_offset
        placed.append((src, ref.start, end, offset))
        cursor = offset + end - ref.start
        own_offset = max(own_offset, cursor)
    return placed, own_offset
