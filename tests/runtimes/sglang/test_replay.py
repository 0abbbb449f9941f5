"""The replay server itself: matching rules, unexpected requests, holds, kill."""

from __future__ import annotations

import anyio
import httpx
import pytest
from orchestrator.runtimes.sglang.replay import Recording, ReplayServer, bodies_match

pytestmark = pytest.mark.anyio


def test_bodies_match_exactly_except_for_a_rid_the_recording_lacks() -> None:
    recorded = {"sampling_params": {"max_new_tokens": 4, "temperature": 0}, "input_ids": [1]}
    assert bodies_match(recorded, {**recorded, "rid": "any"})
    assert bodies_match(
        recorded, {"sampling_params": {"max_new_tokens": 4, "temperature": 0.0}, "input_ids": [1]}
    )
    assert not bodies_match(recorded, {**recorded, "stream": True})
    assert not bodies_match(recorded, {"sampling_params": {"max_new_tokens": 4}, "input_ids": [1]})
    assert not bodies_match({"ignore_eos": True}, {"ignore_eos": 1})
    assert not bodies_match({"rid": "a"}, {"rid": "b"})
    assert not bodies_match({"rid": "a"}, {})
    assert bodies_match(None, None)


async def test_unexpected_requests_get_418_and_fail_assert_clean(
    recordings: dict[str, Recording],
) -> None:
    async with ReplayServer([recordings["health"]]) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.post("/generate", json={"text": "x"})
            health = await http.get("/health")
        assert (answer.status_code, health.status_code) == (418, 200)
        assert answer.text == 'replay: unexpected request POST /generate {"text": "x"}'
        with pytest.raises(AssertionError, match="unexpected requests: "):
            server.assert_clean()
        assert server.unused() == []


async def test_an_unused_expectation_fails_assert_clean(recordings: dict[str, Recording]) -> None:
    async with ReplayServer([recordings["health"]]) as server:
        with pytest.raises(AssertionError, match=r"expected but never requested: \['health'\]"):
            server.assert_clean()
        server.assert_clean(all_used=False)


async def test_a_held_answer_waits_for_its_event_and_kill_drops_it(
    recordings: dict[str, Recording],
) -> None:
    release = anyio.Event()
    async with ReplayServer() as server:
        server.expect(recordings["health"], hold=release)
        server.expect(recordings["model_info"], hold=anyio.Event())
        async with httpx.AsyncClient(base_url=server.url) as http:
            async with anyio.create_task_group() as tg:
                tg.start_soon(http.get, "/health")
                await server.wait_for("/health")
                release.set()
            dropped: list[httpx.RemoteProtocolError] = []

            async def get_model_info() -> None:
                try:
                    await http.get("/model_info")
                except httpx.RemoteProtocolError as exc:
                    dropped.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(get_model_info)
                await server.wait_for("/model_info")
                await server.kill()
            assert str(dropped[0]) == "Server disconnected without sending a response."
            with pytest.raises(httpx.ConnectError):
                await http.get("/health")
