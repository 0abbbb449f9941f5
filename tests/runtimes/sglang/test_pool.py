"""Several servers: prefix affinity and failover (two replay servers, one killed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import pytest
from orchestrator.runtimes.sglang.pool import Backend, ServerPool
from orchestrator.runtimes.sglang.replay import Recording, ReplayServer
from orchestrator.runtimes.sglang.runtime import SGLangRuntime

from orchestrator import (
    ChatMessage,
    GenerateRequest,
    GenerateResult,
    Prompt,
    RequestRejected,
    RuntimeUnavailable,
    SamplingParams,
)

pytestmark = pytest.mark.anyio

QUESTION = Prompt(messages=(ChatMessage(role="user", content="What is 12 + 7?"),))
LENGTH = SamplingParams(max_new_tokens=4, temperature=0, ignore_eos=True)
N4 = SamplingParams(max_new_tokens=16, temperature=0.8, n=4, seed=7)


class _Named:
    """A backend that is only a name: ranking never calls it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = url

    async def generate(self, body: Mapping[str, Any]) -> Any:
        raise AssertionError("not called")

    def stream(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        raise AssertionError("not called")

    async def abort(self, rid: str) -> None:
        raise AssertionError("not called")

    async def aclose(self) -> None:
        return None


def test_rendezvous_ranking_is_stable_spreads_keys_and_moves_only_a_dead_servers_keys() -> None:
    backends = [_Named(f"http://10.0.0.{i}:30000") for i in range(4)]
    pool = ServerPool(backends)
    keys = [f"tree-{i}" for i in range(400)]
    first = {k: pool.server_for(k).url for k in keys}
    assert first == {k: ServerPool(backends).server_for(k).url for k in keys}  # stable
    counts = sorted(list(first.values()).count(b.url) for b in backends)
    assert counts[0] >= 70 and counts[-1] <= 130  # spread over the four
    pool.mark_down(backends[0], RuntimeError("gone"))
    moved = {k for k in keys if pool.server_for(k).url != first[k]}
    assert moved == {k for k in keys if first[k] == backends[0].url}
    assert all(pool.ranked(k)[-1] is backends[0] for k in keys)  # down: tried last


def test_a_down_server_comes_back_after_its_cooldown() -> None:
    backends = [_Named("http://a:1"), _Named("http://b:1")]
    pool = ServerPool(backends, cooldown_s=0.0)
    pool.mark_down(backends[0], RuntimeError("gone"))
    assert pool.is_down(backends[0]) is False


def test_an_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="a server pool needs at least one backend"):
        ServerPool([])


async def test_run_fails_over_on_unavailable_but_not_on_rejected() -> None:
    a, b = _Named("http://a:1"), _Named("http://b:1")
    pool = ServerPool([a, b])
    first = pool.server_for("k")
    tried: list[str] = []

    async def flaky(backend: Backend) -> str:
        tried.append(backend.url)
        if backend is first:
            raise RuntimeUnavailable("connection refused", runtime=backend.name)
        return "ok"

    result, used, failovers = await pool.run("k", flaky)
    assert (result, used is not first, [f.server for f in failovers]) == ("ok", True, [first.url])
    assert pool.is_down(first)

    async def rejected(backend: Backend) -> str:
        tried.append(backend.url)
        raise RequestRejected("bad", runtime=backend.name, status=400)

    tried.clear()
    with pytest.raises(RequestRejected):
        await pool.run("k", rejected)
    assert len(tried) == 1


async def test_run_names_every_server_when_all_fail() -> None:
    pool = ServerPool([_Named("http://a:1"), _Named("http://b:1")])

    async def down(backend: Backend) -> str:
        raise RuntimeUnavailable("refused", runtime=backend.name)

    with pytest.raises(
        RuntimeUnavailable,
        match=r"all 2 SGLang server\(s\) failed: "
        r"http://[ab]:1: runtime 'http://[ab]:1': refused; http://[ab]:1: ",
    ):
        await pool.run("k", down)


def tree_ids(runtime: SGLangRuntime, a: ReplayServer, b: ReplayServer) -> tuple[str, str]:
    """A tree name whose requests go to ``a`` and one whose go to ``b``."""
    names = {runtime.pool.server_for(f"id:t{i}").url: f"t{i}" for i in range(50)}
    return names[a.url], names[b.url]


async def test_a_trees_requests_stay_on_one_server_and_trees_spread(
    make_runtime: Callable[..., SGLangRuntime], recordings: dict[str, Recording]
) -> None:
    async with ReplayServer() as a, ReplayServer() as b:
        runtime = make_runtime(a, b)
        tree_a, tree_b = tree_ids(runtime, a, b)
        a.expect(recordings["generate_length"], times=2)
        a.expect(recordings["generate_n4_seeded"])
        b.expect(recordings["generate_length"])
        await runtime.generate(
            [
                GenerateRequest(prompt=QUESTION, sampling=LENGTH, request_id=f"{tree_a}/n1"),
                GenerateRequest(prompt=QUESTION, sampling=N4, request_id=f"{tree_a}/n2"),
            ]
        )
        [on_b] = await runtime.generate(
            [GenerateRequest(prompt=QUESTION, sampling=LENGTH, request_id=f"{tree_b}/n1")]
        )
        [again] = await runtime.generate(
            [GenerateRequest(prompt=QUESTION, sampling=LENGTH, request_id=f"{tree_a}/n3")]
        )
        assert (on_b.meta["server"], again.meta["server"]) == (b.url, a.url)
        assert sorted(e.body["rid"] for e in a.log) == [f"{tree_a}/n{i}" for i in (1, 2, 3)]
        assert [e.body["rid"] for e in b.log] == [f"{tree_b}/n1"]
        a.assert_clean()
        b.assert_clean()


async def test_a_dead_servers_in_flight_request_finishes_elsewhere_and_nothing_is_lost(
    make_runtime: Callable[..., SGLangRuntime], recordings: dict[str, Recording]
) -> None:
    async with ReplayServer() as a, ReplayServer() as b:
        runtime = make_runtime(a, b)
        tree_a, _ = tree_ids(runtime, a, b)
        never = anyio.Event()
        a.expect(recordings["generate_length"])
        a.expect(recordings["generate_n4_seeded"], hold=never)  # a dies before it answers
        b.expect(recordings["generate_n4_seeded"])
        b.expect(recordings["generate_length"])
        results: list[GenerateResult] = []

        async def run() -> None:
            results.extend(
                await runtime.generate(
                    [
                        GenerateRequest(
                            prompt=QUESTION, sampling=LENGTH, request_id=f"{tree_a}/n1"
                        ),
                        GenerateRequest(prompt=QUESTION, sampling=N4, request_id=f"{tree_a}/n2"),
                    ]
                )
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await a.wait_for("/generate", 2)
            await anyio.wait_all_tasks_blocked()
            await a.kill()
        finished, moved = results
        assert finished.meta == {"server": a.url, "rid": f"{tree_a}/n1"}
        assert finished.completions[0].text == "12 + "
        assert moved.meta["server"] == b.url
        [failover] = moved.meta["failover"]
        assert failover["server"] == a.url
        assert "RemoteProtocolError" in failover["error"] or "ReadError" in failover["error"]
        assert len(moved.completions) == 4
        # The tree now lives on b: a is marked down.
        [later] = await runtime.generate(
            [GenerateRequest(prompt=QUESTION, sampling=LENGTH, request_id=f"{tree_a}/n3")]
        )
        assert later.meta == {"server": b.url, "rid": f"{tree_a}/n3"}
        assert runtime.statistics().failovers == 1
        b.assert_clean()


async def test_a_stream_fails_over_before_its_first_chunk(
    make_runtime: Callable[..., SGLangRuntime],
    recordings: dict[str, Recording],
    as_input_ids: Callable[[Recording], Recording],
) -> None:
    async with ReplayServer() as a, ReplayServer() as b:
        runtime = make_runtime(a, b)
        tree_a, _ = tree_ids(runtime, a, b)
        await a.kill()
        b.expect(as_input_ids(recordings["generate_stream"]))
        request = GenerateRequest(
            prompt=QUESTION,
            request_id=f"{tree_a}/s",
            sampling=SamplingParams(max_new_tokens=12, temperature=0),
        )
        texts = [c.text async for c in runtime.stream(request)]
        assert "".join(texts) == "12 + 7 = 8\n\nThis is"
        [dead] = [s for s in runtime.pool.backends if s.url == a.url]
        assert runtime.pool.is_down(dead)
        assert runtime.statistics().failovers == 1
        b.assert_clean()


async def test_all_servers_down_is_unavailable(make_runtime: Callable[..., SGLangRuntime]) -> None:
    async with ReplayServer() as a, ReplayServer() as b:
        runtime = make_runtime(a, b)
        await a.kill()
        await b.kill()
        with pytest.raises(
            RuntimeUnavailable,
            match=r"all 2 SGLang server\(s\) failed: .*"
            r"ConnectError",
        ):
            await runtime.generate([GenerateRequest(prompt=QUESTION, sampling=LENGTH)])
