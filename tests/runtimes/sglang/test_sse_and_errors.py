"""SSE parsing and the mapping of SGLang's error answers to the core's exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from orchestrator.runtimes.sglang.dispatch import Dispatcher
from orchestrator.runtimes.sglang.errors import error_for_status, sglang_message, summarize_body
from orchestrator.runtimes.sglang.pool import ServerPool
from orchestrator.runtimes.sglang.sse import iter_sse_chunks

from orchestrator import (
    ContextOverflow,
    RequestRejected,
    RuntimeFailure,
    RuntimeUnavailable,
)

pytestmark = pytest.mark.anyio


async def lines_of(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def collect(*lines: str) -> list[dict[str, object]]:
    return [c async for c in iter_sse_chunks(lines_of(*lines), runtime="r", body={"x": 1})]


async def test_events_split_on_blank_lines_and_stop_at_done() -> None:
    assert await collect(
        ": comment",
        'data: {"text": "a"}',
        "",
        "event: ignored",
        'data: {"text":',
        'data: "b"}',
        "",
        "data: [DONE]",
        "",
        'data: {"text": "after"}',
        "",
    ) == [{"text": "a"}, {"text": "b"}]


async def test_done_without_a_trailing_blank_line_ends_the_stream() -> None:
    assert await collect('data: {"text": "a"}', "", "data: [DONE]") == [{"text": "a"}]


async def test_a_stream_without_done_is_unavailable() -> None:
    with pytest.raises(
        RuntimeUnavailable,
        match=r"runtime 'r': stream ended before data: "
        r"\[DONE\] \(server closed the connection\)",
    ):
        await collect('data: {"text": "a"}', "")


async def test_non_json_and_non_object_events_are_failures() -> None:
    with pytest.raises(RuntimeFailure, match=r"stream event is not JSON: '\{oops'"):
        await collect("data: {oops", "")
    with pytest.raises(RuntimeFailure, match=r"stream event is not a JSON object: '\[1\]'"):
        await collect("data: [1]", "")


async def test_error_events_are_rejections() -> None:
    with pytest.raises(
        RequestRejected,
        match=r"error in stream: bad schema; request: "
        r'\{"x": 1\}',
    ):
        await collect('data: {"error": {"message": "bad schema"}}', "")


def test_message_extraction() -> None:
    assert sglang_message('{"error": {"message": "m1"}}') == "m1"
    assert sglang_message('{"detail": "m2"}') == "m2"
    assert sglang_message('{"message": "m3"}') == "m3"
    assert sglang_message("Internal Server Error") == "Internal Server Error"
    assert sglang_message("") == "(empty body)"


def test_summary_shortens_long_id_lists_and_text() -> None:
    body = {"input_ids": list(range(2100)), "text": "x" * 300}
    assert summarize_body(body) == (
        '{"input_ids": [0, 1, 2, 3, 4, 5, "... (2100 items)"], "text": "'
        + "x" * 100
        + '... (300 chars)"}'
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, RequestRejected),
        (404, RequestRejected),
        (500, RequestRejected),
        (502, RuntimeUnavailable),
        (503, RuntimeUnavailable),
        (504, RuntimeUnavailable),
        (507, RuntimeFailure),
    ],
)
def test_status_mapping(status: int, kind: type[Exception]) -> None:
    error = error_for_status(
        status, "boom", runtime="r", method="POST", path="/generate", body={"a": 1}
    )
    assert type(error) is kind
    assert str(error) == (
        f"runtime 'r': POST /generate -> HTTP {status}: boom; request: {{\"a\": 1}}"
        + (
            " (SGLang 0.5.17 answers an unknown sampling_params key this way)"
            if status == 500
            else ""
        )
    )


def test_a_total_over_the_context_is_an_overflow() -> None:
    text = (
        '{"error": {"message": "Requested token count exceeds the model\'s maximum context '
        "length of 2048 tokens. You requested a total of 2110 tokens: 2100 tokens from the "
        'input messages and 10 tokens for the completion."}}'
    )
    error = error_for_status(400, text, runtime="r", method="POST", path="/generate", body={})
    assert isinstance(error, ContextOverflow)
    assert (error.num_tokens, error.max_tokens) == (2110, 2048)


def test_rids_in_flight_stay_prefix_free() -> None:
    # claim_rid never touches a backend: a bare object stands for one.
    dispatcher = Dispatcher(
        ServerPool([object()]),  # type: ignore[list-item]
        fanout=True,
        min_prefix_tokens=32,
        abort_timeout_s=1,
    )
    assert dispatcher.claim_rid("n0.1") == "n0.1"
    clash = dispatcher.claim_rid("n0.10")  # SGLang would abort it with "n0.1"
    assert clash != "n0.10" and len(clash) == 32
    assert dispatcher.claim_rid("n0") != "n0"
    assert dispatcher.claim_rid("n1") == "n1"
    dispatcher.release_rid("n0.1")
    assert dispatcher.claim_rid("n0.1x") == "n0.1x"
