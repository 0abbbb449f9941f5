"""The summarising memory folds whole chunks of old steps into one running summary."""

from __future__ import annotations

import anyio
import pytest
from orchestrator.plugins.memory.summarizing import SummarizingConfig, SummarizingMemory

from orchestrator import Node, Orchestrator, OrchestratorError, RunContext, SearchAttrs
from orchestrator.testing import ScriptedRuntime

from .conftest import context

SCRIPT = {
    "rules": [
        {"contains": "(none yet)", "outputs": [" S(0-1) "]},
        {"contains": "so far:\nS(0-1)\n\nNew reasoning steps:\ns2 s3 ", "outputs": ["S(0-3)"]},
    ]
}


def _chain(ctx: RunContext, num_steps: int) -> list[Node]:
    nodes, parent = [], ctx.root
    for i in range(num_steps):
        node = ctx.add_node("search", [parent], SearchAttrs(), text=f"s{i} ")
        nodes.append(node)
        parent = node
    return nodes


def test_whole_chunks_are_summarised() -> None:
    memory = SummarizingMemory(SummarizingConfig(keep_steps=2, chunk_steps=2))
    assert [memory.num_summarized(n) for n in range(8)] == [0, 0, 0, 0, 2, 2, 4, 4]


async def test_the_context_is_the_summary_then_the_recent_steps() -> None:
    rt = ScriptedRuntime(SCRIPT)
    ctx = context(Orchestrator(rt))
    steps = _chain(ctx, 6)
    child = ctx.add_node("search", [steps[-1]], SearchAttrs())
    memory = SummarizingMemory(SummarizingConfig(keep_steps=2, chunk_steps=2))
    prompt = await memory.context(child, ctx)  # a 7-node path: 4 summarised, 3 verbatim
    assert prompt.assistant_prefix == "Summary of my earlier steps: S(0-3)\n\ns4 s5 "
    assert prompt.messages is not None and prompt.messages[-1].content == "q"
    assert memory.summaries == {steps[1].id: "S(0-1)", steps[3].id: "S(0-3)"}
    summaries = [n for n in ctx.graph if n.kind == "memory_summary"]
    assert [(n.parent_ids, n.text) for n in summaries] == [
        ((steps[1].id,), " S(0-1) "),
        ((steps[3].id,), "S(0-3)"),
    ]
    assert all(c.sampling is not None and c.sampling.temperature == 0.0 for c in rt.calls)
    # A sibling on the same path reuses both summaries: no new call.
    sibling = ctx.add_node("search", [steps[-1]], SearchAttrs())
    assert (await memory.context(sibling, ctx)).assistant_prefix == prompt.assistant_prefix
    assert len(rt.calls) == 2


async def test_a_short_path_is_all_verbatim() -> None:
    rt = ScriptedRuntime(SCRIPT)
    ctx = context(Orchestrator(rt))
    steps = _chain(ctx, 3)
    memory = SummarizingMemory(SummarizingConfig(keep_steps=2, chunk_steps=2))
    prompt = await memory.context(steps[-1], ctx)
    assert prompt.assistant_prefix == "s0 s1 s2 "
    assert rt.calls == []


async def test_concurrent_siblings_share_one_summary_call() -> None:
    rt = ScriptedRuntime({"rules": [{**SCRIPT["rules"][0], "delay": 0.01}]})
    ctx = context(Orchestrator(rt))
    steps = _chain(ctx, 3)
    memory = SummarizingMemory(SummarizingConfig(keep_steps=1, chunk_steps=2))
    children = [ctx.add_node("search", [steps[-1]], SearchAttrs()) for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for child in children:
            tg.start_soon(memory.context, child, ctx)
    assert len(rt.calls) == 1


async def test_a_failed_summary_is_an_error_not_an_empty_summary() -> None:
    rt = ScriptedRuntime({"default": {"raise_error": "down"}})
    ctx = context(Orchestrator(rt))
    steps = _chain(ctx, 3)
    memory = SummarizingMemory(SummarizingConfig(keep_steps=1, chunk_steps=2))
    expected = r"^summarizing: summary node r\.0\.0\.1 failed: RuntimeFailure: .*: down$"
    with pytest.raises(OrchestratorError, match=expected):
        await memory.context(steps[-1], ctx)
