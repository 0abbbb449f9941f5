"""TIM's working memory: the live tokens of the response, mapped to the full record.

The *document* is everything the response ever contained, in order (generated and
injected text); it only grows, and run-graph nodes keep their spans in it. The *live*
sequence is what the model attends to: the prompt plus the document minus what was pruned.
Each live character knows its document offset, each live token its live characters, so a
pruned document span maps to a token range.

A span that starts or ends inside a token (byte-level BPE merges ``",`` or ``],``) cannot be
dropped as whole tokens. Then everything from the first touched token is dropped and the
kept text after it is re-tokenized and encoded again — still only the tail, as TIMRUN's
Eq. (1) re-encodes the tokens after a pruned span (methods.md §1, step 5).

With a handle (``Capability.KV_RANGE_DROP``) every edit is applied to its KV at once; without
one, the edit changes only :attr:`Transcript.token_ids`, the rebuilt prompt.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator import Runtime, SequenceHandle

__all__ = ["Edit", "Transcript", "token_pieces"]

_WINDOW = 4  # tokens of left context when decoding one token's text


async def token_pieces(rt: Runtime, ids: Sequence[int], before: Sequence[int] = ()) -> list[str]:
    """The text each token adds, so that the pieces concatenate to the decoded text.

    A token that ends inside a multi-byte character adds ``""``; the token completing the
    character carries it. ``before``: the tokens preceding ``ids`` (decoding context, for
    tokenizers that strip a leading space at the start of a decode).
    """
    pieces: list[str] = []
    window = list(before[-_WINDOW:])
    pending: list[int] = []
    for token in ids:
        base = await rt.detokenize(window)
        full = await rt.detokenize([*window, *pending, token])
        if full.endswith("\ufffd") or not full.startswith(base):
            pending.append(token)
            pieces.append("")
            continue
        pieces.append(full[len(base) :])
        window = [*window, *pending, token][-_WINDOW:]
        pending = []
    return pieces


@dataclass(frozen=True, slots=True)
class Edit:
    """What one removal did: live tokens removed (net), tokens encoded again after them,
    and the live tokens left (prompt included)."""

    dropped_tokens: int
    reencoded_tokens: int
    live_tokens: int


class Transcript:
    """Live tokens of one TIM response over its prompt, with their document offsets.

    :ivar document: the full record (never shrinks, except a retracted overshoot).
    :ivar peak_tokens: the most tokens (prompt included) the live sequence ever held.
    """

    def __init__(self, rt: Runtime, prompt_ids: Sequence[int]) -> None:
        self._rt = rt
        self.prompt_ids = list(prompt_ids)
        self.document = ""
        self.tokens: list[int] = []
        self._ends: list[int] = []  # live text offset after each live token
        self._offsets: list[int] = []  # document offset of each live character
        self.text = ""  # the live text
        self.peak_tokens = len(self.prompt_ids)
        #: Tokens encoded into a handle besides the prompt and generation: injected text and
        #: tokens re-encoded after drops (what a KV-level edit costs).
        self.encoded_tokens = 0
        #: ``drop_range`` calls made on a handle (prunes, and cuts of an overshoot).
        self.drops = 0

    @property
    def token_ids(self) -> list[int]:
        """The live sequence: prompt and live response tokens."""
        return [*self.prompt_ids, *self.tokens]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.tokens)

    def add(self, ids: Sequence[int], pieces: Sequence[str]) -> str:
        """Append tokens (already in the handle, or just generated) with their pieces; the
        text is appended to the document too. Returns that text."""
        start = len(self.document)
        text = "".join(pieces)
        self.document += text
        self._append_live(ids, pieces, range(start, start + len(text)))
        return text

    async def inject(self, text: str, handle: SequenceHandle | None) -> list[int]:
        """Tokenize orchestrator text (a tool result), encode it into ``handle`` (no new
        request), and append it. Returns its token ids."""
        ids = await self._rt.tokenize(text)
        pieces = await token_pieces(self._rt, ids, self.token_ids)
        if "".join(pieces) != text:
            raise ValueError(f"tokenizing {text!r} does not round-trip through the runtime")
        if handle is not None:
            await handle.extend(ids)
            self.encoded_tokens += len(ids)
        self.add(ids, pieces)
        return ids

    async def remove(self, start: int, end: int, handle: SequenceHandle | None) -> Edit:
        """Remove document span ``[start, end)`` from the live sequence (pruning)."""
        lo = bisect.bisect_left(self._offsets, start)
        hi = bisect.bisect_left(self._offsets, end)
        if lo == hi:
            return Edit(0, 0, len(self))
        return await self._splice(lo, hi, handle)

    async def retract(self, doc_offset: int, handle: SequenceHandle | None) -> Edit:
        """Cut the live sequence and the document back to ``doc_offset`` (an overshoot past
        a point where text must be injected)."""
        lo = bisect.bisect_left(self._offsets, doc_offset)
        edit = await self._splice(lo, len(self.text), handle)
        self.document = self.document[:doc_offset]
        return edit

    async def _splice(self, lo: int, hi: int, handle: SequenceHandle | None) -> Edit:
        """Remove live characters ``[lo, hi)``."""
        first = bisect.bisect_right(self._ends, lo)  # the token holding character lo
        last = bisect.bisect_left(self._ends, hi) + 1 if hi > lo else first  # one past
        last = min(last, len(self.tokens))
        token_start = self._ends[first - 1] if first else 0
        base = len(self.prompt_ids)
        before = len(self)
        if token_start == lo and (last == 0 or self._ends[last - 1] == hi):
            if handle is not None:
                await handle.drop_range(base + first, base + last)
                self.drops += 1
                self.encoded_tokens += len(self.tokens) - last
            tail = len(self.tokens) - last
            self._cut(first, last, hi)
            return Edit(last - first, tail, len(self))
        # A boundary falls inside a token: drop from the first touched token to the end and
        # encode the kept text again.
        kept = self.text[token_start:lo] + self.text[hi:]
        kept_offsets = self._offsets[token_start:lo] + self._offsets[hi:]
        if handle is not None:
            await handle.drop_range(base + first, before)
            self.drops += 1
        self._truncate(first)
        ids = await self._rt.tokenize(kept) if kept else []
        pieces = await token_pieces(self._rt, ids, self.token_ids)
        if "".join(pieces) != kept:
            raise ValueError(f"tokenizing {kept!r} does not round-trip through the runtime")
        if handle is not None and ids:
            await handle.extend(ids)
            self.encoded_tokens += len(ids)
        self._append_live(ids, pieces, kept_offsets)
        return Edit(before - len(self), len(ids), len(self))

    # -- list bookkeeping ----------------------------------------------------------------

    def _append_live(
        self, ids: Sequence[int], pieces: Sequence[str], offsets: Sequence[int]
    ) -> None:
        end = len(self.text)
        for token, piece in zip(ids, pieces, strict=True):
            end += len(piece)
            self.tokens.append(token)
            self._ends.append(end)
        self.text += "".join(pieces)
        self._offsets.extend(offsets)
        self.peak_tokens = max(self.peak_tokens, len(self))

    def _truncate(self, first: int) -> None:
        cut = self._ends[first - 1] if first else 0
        del self.tokens[first:], self._ends[first:]
        self.text = self.text[:cut]
        del self._offsets[cut:]

    def _cut(self, first: int, last: int, hi: int) -> None:
        lo = self._ends[first - 1] if first else 0
        removed = hi - lo
        del self.tokens[first:last]
        self._ends[first:last] = []
        self._ends[first:] = [e - removed for e in self._ends[first:]]
        self.text = self.text[:lo] + self.text[hi:]
        del self._offsets[lo:hi]
