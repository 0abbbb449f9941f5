"""Streaming, aborts and cancellation, against recorded SGLang 0.5.17 exchanges.

The recorded aborted answers (``generate_aborted``, ``generate_stream_aborted``) came about
because an ``/abort_request`` arrived; the replay holds them until one does
(``until_abort``). 0.5.17 answers an abort of any rid with 200 and an empty body
(``abort_request``), so the abort of another rid reuses that answer.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from orchestrator.runtimes.sglang.replay import Recording, ReplayServer
from orchestrator.runtimes.sglang.runtime import SGLangRuntime

from orchestrator import (
    ChatMessage,
    GenerateRequest,
    GenerateResult,
    GenerationChunk,
    Prompt,
    SamplingParams,
    Usage,
)

pytestmark = pytest.mark.anyio

QUESTION = Prompt(messages=(ChatMessage(role="user", content="What is 12 + 7?"),))
LONG = SamplingParams(max_new_tokens=1500, temperature=0.8, ignore_eos=True)
ToIds = Callable[[Recording], Recording]


async def test_stream_yields_deltas_then_the_completion(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
    as_input_ids: ToIds,
) -> None:
    server.expect(as_input_ids(recordings["generate_stream"]))
    runtime = make_runtime(server)
    request = GenerateRequest(
        prompt=QUESTION, sampling=SamplingParams(max_new_tokens=12, temperature=0)
    )
    chunks = [c async for c in runtime.stream(request)]
    assert [c.text for c in chunks] == [
        "1",
        "2",
        " +",
        " ",
        "7",
        " =",
        " ",
        "8",
        "\n",
        "\n",
        "This",
        " is",
    ]
    assert [c.token_ids for c in chunks][:3] == [[33], [34], [1232]]
    assert all(c.completion is None and c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.completion is not None
    assert last.completion.text == "".join(c.text for c in chunks)
    assert last.completion.token_ids == [i for c in chunks for i in c.token_ids]
    assert last.completion.finish_reason == "length"
    assert last.usage == Usage(prompt_tokens=18, cached_tokens=17, generated_tokens=12)
    assert server.log[0].body["stream"] is True


async def test_abort_ends_a_generation_with_what_it_made_so_far(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    server.expect(recordings["generate_aborted"], until_abort=True)
    server.expect(recordings["abort_request"])
    runtime = make_runtime(server)
    results: list[GenerateResult] = []

    async def run() -> None:
        results.extend(
            await runtime.generate(
                [GenerateRequest(prompt=QUESTION, sampling=LONG, request_id="long-1")]
            )
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await server.wait_for("/generate")
        assert await runtime.abort("long-1") is True
    [completion] = results[0].completions
    assert completion.finish_reason == "abort"
    assert len(completion.token_ids) == 674
    assert completion.text.startswith("12 is indeed 12 + 7, which is the answer to 12 + 7.")
    assert results[0].usage.generated_tokens == 674
    assert await runtime.abort("long-1") is False  # no longer in flight
    assert runtime.statistics().aborts == 1


async def test_cancelling_a_call_aborts_its_rid_on_the_server(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    server.expect(recordings["generate_aborted"], until_abort=True)
    server.expect(recordings["abort_request"])
    runtime = make_runtime(server)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            runtime.generate, [GenerateRequest(prompt=QUESTION, sampling=LONG, request_id="long-1")]
        )
        await server.wait_for("/generate")
        tg.cancel_scope.cancel()
    assert [(e.path, e.body.get("rid")) for e in server.log] == [
        ("/generate", "long-1"),
        ("/abort_request", "long-1"),
    ]
    assert runtime.statistics().aborts == 1
    server.assert_clean()


async def test_a_stream_aborted_on_the_server_ends_with_an_abort_completion(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    rec = recordings["generate_stream_aborted"]
    server.expect(rec, until_abort=True)
    server.expect(recordings["abort_request"].with_body({"rid": "long-2"}))
    runtime = make_runtime(server)
    request = GenerateRequest(prompt=QUESTION, sampling=LONG, request_id="long-2")
    chunks: list[GenerationChunk] = []
    async for chunk in runtime.stream(request):
        chunks.append(chunk)
        if len(chunks) == 3:
            assert await runtime.abort("long-2") is True
    assert len(chunks) == len(rec.sse_lines) - 1  # every event but [DONE]
    last = chunks[-1].completion
    assert last is not None and last.finish_reason == "abort"
    assert last.text.startswith("This problem involves more than just adding 12 and 7.")
    assert len(last.token_ids) == sum(len(c.token_ids) for c in chunks)


async def test_closing_a_stream_early_aborts_its_rid(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    server.expect(recordings["generate_stream_aborted"], until_abort=True)
    server.expect(recordings["abort_request"].with_body({"rid": "long-2"}))
    runtime = make_runtime(server)
    stream = runtime.stream(GenerateRequest(prompt=QUESTION, sampling=LONG, request_id="long-2"))
    texts = [(await anext(stream)).text for _ in range(3)]
    await stream.aclose()
    assert texts == ["This", " problem", " involves"]
    assert [(e.path, e.body.get("rid")) for e in server.log] == [
        ("/generate", "long-2"),
        ("/abort_request", "long-2"),
    ]
    server.assert_clean()


async def test_cancelling_the_consumer_of_a_stream_aborts_its_rid(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    server.expect(recordings["generate_stream_aborted"], until_abort=True)
    server.expect(recordings["abort_request"].with_body({"rid": "long-2"}))
    runtime = make_runtime(server)
    received = anyio.Event()

    async def consume() -> None:
        request = GenerateRequest(prompt=QUESTION, sampling=LONG, request_id="long-2")
        async with anyio.create_task_group():
            stream = runtime.stream(request)
            try:
                async for _chunk in stream:
                    received.set()
            finally:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await received.wait()
        tg.cancel_scope.cancel()
    assert [e.path for e in server.log] == ["/generate", "/abort_request"]
    assert runtime.statistics().aborts == 1
