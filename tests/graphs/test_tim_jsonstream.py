"""The incremental JSON parser under TIM's node builder."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from orchestrator.graphs.tim.jsonstream import JsonEvent, JsonStream, JsonStreamError

DOC = (
    '{"reasoning": [{"thought": "a \\"q\\" b", "tooluse": {"tool_name": "add", '
    '"parameters": {"a": 1, "b": [true, null, -2.5e3]}, "tool_result": {}}, '
    '"conclusion": "c"}], "answer": "7"}'
)


def events(doc: str, sizes: list[int] | None = None) -> list[JsonEvent]:
    stream = JsonStream()
    out: list[JsonEvent] = []
    i = 0
    for size in sizes or [len(doc)]:
        out += stream.feed(doc[i : i + size])
        i += size
    out += stream.feed(doc[i:])
    assert stream.done
    return out


def test_events_name_paths_and_spans() -> None:
    got = [
        (e.type, e.path, e.kind, DOC[e.start : e.end] if e.end else e.start) for e in events(DOC)
    ]
    assert got[:8] == [
        ("start", (), "object", 0),
        ("key", ("reasoning",), None, '"reasoning"'),
        ("start", ("reasoning",), "array", 14),
        ("start", ("reasoning", 0), "object", 15),
        ("key", ("reasoning", 0, "thought"), None, '"thought"'),
        ("start", ("reasoning", 0, "thought"), "string", 27),
        ("end", ("reasoning", 0, "thought"), "string", '"a \\"q\\" b"'),
        # a member's span starts right after the previous value: the comma is its own
        ("key", ("reasoning", 0, "tooluse"), None, ', "tooluse"'),
    ]
    ends = {e.path: DOC[e.start : e.end] for e in events(DOC) if e.type == "end"}
    assert json.loads(ends[("reasoning", 0, "tooluse", "parameters")]) == {
        "a": 1,
        "b": [True, None, -2500.0],
    }
    assert ends[("reasoning", 0, "tooluse", "parameters", "b", 2)] == "-2.5e3"
    assert ends[()] == DOC


@given(st.lists(st.integers(min_value=1, max_value=7), max_size=60))
def test_any_chunking_gives_the_same_events(sizes: list[int]) -> None:
    assert events(DOC, sizes) == events(DOC)


def test_text_after_the_document_is_kept_aside() -> None:
    stream = JsonStream()
    stream.feed('{"a": [1, 2]}  <|im_end|>')
    assert stream.done
    assert stream.trailing == "<|im_end|>"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a" 1}', "unexpected '1' in an object at offset 5"),
        ('{"a": [1,]}', "unexpected ']' where a value starts at offset 9"),
        ('{"a": tru}', "bad literal 'tru' at offset 6"),
        ('{"a": "x\ny"}', "control character in a string at offset 8"),
        ("[1 2]", "unexpected '2' in an array at offset 3"),
    ],
)
def test_errors_name_the_offset(text: str, message: str) -> None:
    with pytest.raises(JsonStreamError, match=message.replace("[", r"\[").replace("]", r"\]")):
        JsonStream().feed(text)
