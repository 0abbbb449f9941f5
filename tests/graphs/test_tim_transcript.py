"""TIM's working memory: document spans to live token ranges, drops and re-encodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from orchestrator.graphs.tim.transcript import Edit, Transcript, token_pieces

pytestmark = pytest.mark.anyio

#: Multi-character tokens as byte-level BPE merges them in JSON: spans start inside them.
VOCAB = ['",', "],", '"}', ': "', '"', "[", "]", "{", "}", ",", " ", ":"]


class WordRuntime:
    """Greedy longest-match tokenizer over ``VOCAB`` plus single characters."""

    def __init__(self) -> None:
        self.pieces: list[str] = list(VOCAB)

    def _id(self, piece: str) -> int:
        if piece not in self.pieces:
            self.pieces.append(piece)
        return self.pieces.index(piece)

    async def tokenize(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            match = max((v for v in VOCAB if text.startswith(v, i)), key=len, default=text[i])
            ids.append(self._id(match))
            i += len(match)
        return ids

    async def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


class ByteRuntime:
    async def tokenize(self, text: str) -> list[int]:
        return list(text.encode())

    async def detokenize(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode(errors="replace")


class Handle:
    """An in-memory handle counting what a KV cache would re-encode."""

    def __init__(self, ids: list[int]) -> None:
        self.token_ids = list(ids)
        self.drops: list[tuple[int, int]] = []
        self.reencoded = 0
        self.extended = 0

    async def drop_range(self, start: int, end: int) -> None:
        self.drops.append((start, end))
        self.reencoded += len(self.token_ids) - end
        del self.token_ids[start:end]

    async def extend(self, ids: Sequence[int]) -> None:
        self.extended += len(ids)
        self.token_ids.extend(ids)


PROMPT = [100, 101, 102]


async def fill(rt: Any, text: str) -> tuple[Transcript, Handle]:
    transcript = Transcript(rt, PROMPT)
    ids = await rt.tokenize(text)
    transcript.add(ids, await token_pieces(rt, ids))
    return transcript, Handle(transcript.token_ids)


async def test_pieces_concatenate_and_multibyte_characters_go_to_their_last_byte() -> None:
    rt = ByteRuntime()
    ids = await rt.tokenize("aé€b")
    assert await token_pieces(rt, ids) == ["a", "", "é", "", "", "€", "b"]


async def test_an_aligned_span_is_one_drop_and_the_tail_is_reencoded() -> None:
    rt = WordRuntime()
    doc = '{"t": "x", "s": [1], "c": "y"}'
    transcript, handle = await fill(rt, doc)
    span = (doc.index(', "s"') + 1, doc.index(', "c"') + 1)  # ' "s": [1],' is whole tokens
    edit = await transcript.remove(*span, handle)
    assert transcript.text == '{"t": "x", "c": "y"}'
    assert transcript.document == doc
    assert handle.token_ids == transcript.token_ids
    assert handle.extended == 0 and len(handle.drops) == 1
    tail = len(await rt.tokenize(' "c": "y"}'))
    assert edit == Edit(
        dropped_tokens=len(await rt.tokenize(' "s": [1],')),
        reencoded_tokens=tail,
        live_tokens=len(transcript),
    )
    assert handle.reencoded == tail


async def test_a_span_inside_merged_tokens_drops_from_there_and_reencodes_the_kept_text() -> None:
    rt = WordRuntime()
    doc = '{"t": "x", "s": [{"t": "y"}], "c": "z"}'
    transcript, handle = await fill(rt, doc)
    start = doc.index(', "s"')  # inside the '",' token after "x
    end = doc.index(', "c"')  # inside the '],' token
    before = len(transcript)
    edit = await transcript.remove(start, end, handle)
    assert edit.dropped_tokens == before - len(transcript)
    assert transcript.text == '{"t": "x", "c": "z"}'
    assert handle.token_ids == transcript.token_ids
    kept = await rt.tokenize('", "c": "z"}')
    assert transcript.token_ids[-len(kept) :] == kept
    first = len(await rt.tokenize('{"t": "x'))  # the '",' token holding the span's start
    assert handle.drops == [(len(PROMPT) + first, len(PROMPT) + len(await rt.tokenize(doc)))]
    assert edit.reencoded_tokens == len(kept) == handle.extended
    assert edit.live_tokens == len(transcript)
    # the document keeps everything, and offsets still map: drop the remaining conclusion
    assert transcript.document == doc
    await transcript.remove(doc.index('"z"'), doc.index('"z"') + 3, handle)
    assert transcript.text == '{"t": "x", "c": }'


async def test_a_span_already_gone_changes_nothing_and_an_enclosing_one_takes_the_rest() -> None:
    rt = WordRuntime()
    doc = '{"z": 1, "a": [{"x": 0, "b": [1], "c": 2}], "d": 3}'
    transcript, handle = await fill(rt, doc)
    inner = (doc.index(', "b"'), doc.index(', "c"'))
    await transcript.remove(*inner, handle)
    assert transcript.text == '{"z": 1, "a": [{"x": 0, "c": 2}], "d": 3}'
    assert await transcript.remove(*inner, handle) == Edit(0, 0, len(transcript))
    await transcript.remove(doc.index(', "a"'), doc.index(', "d"'), handle)
    assert transcript.text == '{"z": 1, "d": 3}'
    assert handle.token_ids == transcript.token_ids


async def test_retract_cuts_the_live_sequence_and_the_document_inside_a_token() -> None:
    rt = WordRuntime()
    doc = '{"k": "v",'
    transcript, handle = await fill(rt, doc)
    await transcript.retract(doc.index('",') + 1, handle)
    assert transcript.text == transcript.document == '{"k": "v"'
    assert handle.token_ids == transcript.token_ids


async def test_inject_encodes_into_the_handle_and_counts_the_peak() -> None:
    rt = WordRuntime()
    transcript, handle = await fill(rt, '{"x": ')
    before = len(transcript)
    ids = await transcript.inject('{"sum": 7}', handle)
    assert handle.extended == len(ids)
    assert transcript.document == '{"x": {"sum": 7}'
    assert transcript.peak_tokens == before + len(ids)
    await transcript.remove(0, len(transcript.document), handle)
    assert len(transcript) == len(PROMPT)
    assert transcript.peak_tokens == before + len(ids)
