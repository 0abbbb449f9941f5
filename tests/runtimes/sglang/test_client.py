"""The HTTP client against recorded SGLang 0.5.17 exchanges served on loopback."""

from __future__ import annotations

import httpx
import pytest
from orchestrator.runtimes.sglang.client import RetryPolicy, SGLangClient
from orchestrator.runtimes.sglang.launcher import free_port
from orchestrator.runtimes.sglang.replay import Recording, ReplayServer

from orchestrator import ContextOverflow, RequestRejected, RuntimeFailure, RuntimeUnavailable

# Marked here, not only by the root conftest's hook: anyio must see the mark at collection
# time for parametrized tests with async fixtures.
pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=4, backoff_s=0.001, max_backoff_s=0.001)


def client_for(server: ReplayServer, retry: RetryPolicy = FAST) -> SGLangClient:
    return SGLangClient(server.url, retry=retry)


async def test_greedy_text_returns_the_recorded_json(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    rec = recordings["generate_text_greedy"]
    server.expect(rec)
    async with client_for(server) as client:
        out = await client.generate(rec.body)
    assert (
        out["text"]
        == "12 + 7 = 8\n\nThis is a classic example of a simple equation that can be solved using"
    )
    assert out["output_ids"][:8] == [33, 34, 1232, 216, 39, 446, 216, 40]
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 24}
    assert [e.answered_by for e in server.log] == ["generate_text_greedy"]


@pytest.mark.parametrize(
    "name",
    [
        "generate_stop_string",
        "generate_stop_token_ids",
        "generate_ids_logprobs",
        "generate_json_schema",
        "generate_n4_seeded",
        "generate_batch",
        "prefill_only",
    ],
)
async def test_each_recorded_generate_round_trips(
    server: ReplayServer, recordings: dict[str, Recording], name: str
) -> None:
    rec = recordings[name]
    server.expect(rec)
    async with client_for(server) as client:
        out = await client.generate(rec.body)
    assert out == rec.response_json
    server.assert_clean()


async def test_n4_and_batch_answers_are_lists_in_order(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    server.expect(recordings["generate_n4_seeded"])
    server.expect(recordings["generate_batch"])
    async with client_for(server) as client:
        samples = await client.generate(recordings["generate_n4_seeded"].body)
        batch = await client.generate(recordings["generate_batch"].body)
    assert [s["text"][:14] for s in samples] == [
        "To find 12 + 7",
        "To convert 12 ",
        "To find 12 + 7",
        "To calculate 1",
    ]
    assert len({s["meta_info"]["id"].split("_")[0] for s in samples}) == 1
    assert [b["meta_info"]["prompt_tokens"] for b in batch] == [18, 128]


async def test_stream_yields_cumulative_chunks_until_done(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    rec = recordings["generate_stream"]
    server.expect(rec)
    body = {k: v for k, v in rec.body.items() if k != "stream"}
    async with client_for(server) as client:
        chunks = [c async for c in client.stream(body)]
    assert [c["text"] for c in chunks][:4] == ["1", "12", "12 +", "12 + "]
    assert len(chunks) == 12
    assert [c["meta_info"]["finish_reason"] for c in chunks[-2:]] == [
        None,
        {"type": "length", "length": 12},
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("error_negative_max_new_tokens", "max_new_tokens must be at least 0, got -3."),
        ("error_temperature_negative", "temperature must be a non-negative finite number, got -1."),
        ("error_bad_json_schema", "Failed to compile json grammar"),
    ],
)
async def test_recorded_400s_carry_sglangs_message_and_the_request(
    server: ReplayServer, recordings: dict[str, Recording], name: str, message: str
) -> None:
    rec = recordings[name]
    server.expect(rec)
    async with client_for(server) as client:
        # request() sends the raw body on purpose: generate() would refuse it locally.
        with pytest.raises(
            RequestRejected, match="HTTP 400: " + message.replace("+", r"\+")
        ) as info:
            await client.request("POST", "/generate", rec.body)
    assert info.value.status == 400
    assert info.value.request == rec.body
    assert info.value.runtime == f"sglang@{server.url}"


async def test_prompt_over_the_context_is_a_context_overflow(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    rec = recordings["error_prompt_too_long"]
    server.expect(rec)
    async with client_for(server) as client:
        with pytest.raises(
            ContextOverflow,
            match="prompt of 2100 tokens exceeds the model's context of 2048 tokens",
        ) as info:
            await client.generate(rec.body)
    cause = info.value.__cause__
    assert isinstance(cause, RequestRejected)
    assert "is longer than the model's context length (2048 tokens)" in str(cause)
    assert cause.request == rec.body


async def test_unknown_sampling_key_is_a_500_at_the_server_but_caught_locally_first(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    rec = recordings["error_unknown_sampling_param"]
    server.expect(rec)
    async with client_for(server) as client:
        with pytest.raises(
            RequestRejected,
            match=r"invalid sampling_params: no_such_param: "
            "Extra inputs are not permitted",
        ) as local:
            await client.generate(rec.body)
        assert server.log == []  # nothing was sent
        assert local.value.status is None
        with pytest.raises(
            RequestRejected,
            match=r"HTTP 500: Internal Server Error; request: "
            r".*no_such_param.*\(SGLang 0\.5\.17 answers an unknown",
        ) as remote:
            await client.request("POST", "/generate", rec.body)
    assert remote.value.status == 500


async def test_text_and_ids_together_are_refused_locally_though_0517_accepts_them(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    rec = recordings["error_text_and_ids"]
    server.expect(rec)
    async with client_for(server) as client:
        with pytest.raises(
            RequestRejected,
            match=r"exactly one of text, input_ids \(got "
            r"\['text', 'input_ids'\]\)",
        ):
            await client.generate(rec.body)
        response = await client.request("POST", "/generate", rec.body)
    assert response.json()["text"] == "12 + "


async def test_503_while_starting_is_retried_until_healthy(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    for i in range(3):
        server.expect(recordings[f"health_while_starting_{i}"])
    server.expect(recordings["health"])
    async with client_for(server) as client:
        response = await client.request("GET", "/health")
    assert response.status_code == 200
    assert [e.answered_by for e in server.log] == [
        "health_while_starting_0",
        "health_while_starting_1",
        "health_while_starting_2",
        "health",
    ]


async def test_503_past_the_attempts_is_unavailable(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    for i in range(3):
        server.expect(recordings[f"health_while_starting_{i}"])
    retry = RetryPolicy(max_attempts=2, backoff_s=0.001)
    async with client_for(server, retry) as client:
        with pytest.raises(
            RuntimeUnavailable,
            match=r"GET /health -> HTTP 503 \(after 2 "
            r"attempts\): \(empty body\)",
        ):
            await client.request("GET", "/health")
    assert len(server.log) == 2


async def test_wait_ready_polls_health(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    for i in range(3):
        server.expect(recordings[f"health_while_starting_{i}"])
    server.expect(recordings["health"])
    async with client_for(server) as client:
        await client.wait_ready(timeout_s=10)
    assert len(server.log) == 4


async def test_unreachable_server_is_unavailable_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with SGLangClient(url, retry=RetryPolicy(max_attempts=3, backoff_s=0.001)) as client:
        with pytest.raises(
            RuntimeUnavailable,
            match=r"POST http://127\.0\.0\.1:\d+/abort_request:"
            r" ConnectError: .* after 3 attempts",
        ) as info:
            await client.abort("x")
        assert await client.health() is False
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_abort_model_info_sessions_and_flush(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    for name in ("abort_request", "model_info", "open_session", "close_session", "flush_cache"):
        server.expect(recordings[name])
    async with client_for(server) as client:
        await client.abort("long-1")
        info = await client.model_info()
        session_id = await client.open_session(4096)
        await client.close_session(session_id)
        flushed = await client.flush_cache()
    assert info["model_path"] == "/tmp/model"
    assert session_id == "7a549e393fb64620b3fd0082bb512fa9"
    assert flushed.startswith("Cache flushed.")
    server.assert_clean()


async def test_an_error_event_inside_a_stream_is_raised(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    # SGLang reports a request error found after the stream began as a data event.
    base = recordings["generate_stream"]
    lines = (
        'data: {"error": {"message": "The input (2100 tokens) is longer than the '
        "model's context length (2048 tokens).\"}}",
    )
    server.expect(
        Recording(
            name="stream_error",
            method="POST",
            path="/generate",
            body=base.body,
            status=200,
            content_type=base.content_type,
            sse_lines=lines,
        )
    )
    body = {k: v for k, v in base.body.items() if k != "stream"}
    async with client_for(server) as client:
        with pytest.raises(
            ContextOverflow, match="2100 tokens exceeds the model's context of 2048 tokens"
        ):
            _ = [c async for c in client.stream(body)]


async def test_a_stream_cut_before_done_is_unavailable(
    server: ReplayServer, recordings: dict[str, Recording]
) -> None:
    base = recordings["generate_stream"]
    cut = Recording(
        name="stream_cut",
        method="POST",
        path="/generate",
        body=base.body,
        status=200,
        content_type=base.content_type,
        sse_lines=base.sse_lines[:3],
    )
    server.expect(cut)
    body = {k: v for k, v in base.body.items() if k != "stream"}
    async with client_for(server) as client:
        seen = []
        with pytest.raises(RuntimeUnavailable, match=r"stream ended before data: \[DONE\]"):
            async for chunk in client.stream(body):
                seen.append(chunk["text"])
    assert seen == ["1", "12", "12 +"]


async def test_non_json_answer_is_a_runtime_failure(server: ReplayServer) -> None:
    server.expect(
        Recording(
            name="bad_model_info",
            method="GET",
            path="/model_info",
            body=None,
            status=200,
            text="not json",
        )
    )
    async with client_for(server) as client:
        with pytest.raises(RuntimeFailure, match="GET /model_info answered non-JSON: 'not json'"):
            await client.model_info()
