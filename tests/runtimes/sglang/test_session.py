"""Non-streaming SGLang sessions for branching (recorded: open, root, child, close)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from orchestrator.runtimes.sglang.replay import Recording, ReplayServer
from orchestrator.runtimes.sglang.runtime import SGLangRuntime

from orchestrator import ChatMessage, Prompt, RuntimeFailure, SamplingParams, Usage

pytestmark = pytest.mark.anyio

GREEDY8 = SamplingParams(max_new_tokens=8, temperature=0)


async def test_a_child_continues_its_parent_from_only_its_new_tokens(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    for name in ("open_session", "session_root", "session_child", "close_session"):
        server.expect(recordings[name])
    runtime = make_runtime(server)
    question = Prompt(messages=(ChatMessage(role="user", content="What is 12 + 7?"),))
    async with runtime.open_session("tree-1") as session:
        assert session.id == "7a549e393fb64620b3fd0082bb512fa9"
        root = await session.generate(question, GREEDY8, request_id="s-root")
        child = await session.generate(" Then", GREEDY8, request_id="s-child", parent="s-root")
    assert session.id is None
    assert root.completions[0].text == "12 + 7 = 8"
    assert child.completions[0].text == ", 8 + 1 = "
    # Only one new token was sent; the server had the other 26 cached.
    assert server.log[2].body["input_ids"] == [3875]
    assert child.usage == Usage(prompt_tokens=27, cached_tokens=26, generated_tokens=8)
    assert child.meta == {
        "server": server.url,
        "rid": "s-child",
        "session": {"id": "7a549e393fb64620b3fd0082bb512fa9", "parent": "s-root"},
    }
    assert [e.path for e in server.log] == [
        "/open_session",
        "/generate",
        "/generate",
        "/close_session",
    ]
    server.assert_clean()


async def test_a_closed_session_refuses_requests(
    make_runtime: Callable[..., SGLangRuntime], server: ReplayServer
) -> None:
    session = make_runtime(server).open_session("tree-1")
    with pytest.raises(RuntimeFailure, match=r"the session is not open \(use async with\)"):
        await session.generate("x", request_id="a")
