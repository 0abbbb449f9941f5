"""The sliding-window memory keeps the question and exactly the last tokens of the path."""

from __future__ import annotations

import pytest
from orchestrator.plugins.memory.sliding_window import SlidingWindowConfig, SlidingWindowMemory

from orchestrator import (
    Capability,
    Node,
    Orchestrator,
    Prompt,
    RunConfig,
    RunContext,
    SearchAttrs,
)
from orchestrator.testing import ALL_CAPABILITIES, ScriptedRuntime

from .conftest import context

CHATML_Q = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"


async def _chain(ctx: RunContext, texts: list[str]) -> list[Node]:
    rt = ctx.runtime()
    nodes, parent = [], ctx.root
    for text in texts:
        node = ctx.add_node("search", [parent], SearchAttrs(), text=text)
        node.token_ids = await rt.tokenize(text)
        nodes.append(node)
        parent = node
    return nodes


async def test_the_window_is_the_last_tokens_of_the_last_steps() -> None:
    rt = ScriptedRuntime()
    ctx = context(Orchestrator(rt))
    steps = await _chain(ctx, ["A1\n\n", "B2\n\n", "C3\n\n"])
    base = await SlidingWindowMemory(SlidingWindowConfig()).base_ids(ctx)
    assert await rt.detokenize(base) == CHATML_Q
    tail = SlidingWindowMemory(SlidingWindowConfig(max_tokens=7))
    prompt = await tail.context(steps[-1], ctx)
    assert prompt.token_ids is not None
    assert await rt.detokenize(prompt.token_ids) == CHATML_Q + "2\n\nC3\n\n"
    last_step = SlidingWindowMemory(SlidingWindowConfig(max_tokens=None, max_steps=1))
    assert await rt.detokenize(tail.window(steps[0], ctx)) == "A1\n\n"
    assert await rt.detokenize(last_step.window(steps[-1], ctx)) == "C3\n\n"
    everything = SlidingWindowMemory(SlidingWindowConfig(max_tokens=100, max_steps=9))
    assert await rt.detokenize(everything.window(steps[-1], ctx)) == "A1\n\nB2\n\nC3\n\n"
    nothing = SlidingWindowMemory(SlidingWindowConfig(max_tokens=0))
    assert nothing.window(steps[-1], ctx) == []


async def test_a_search_run_sends_only_the_window() -> None:
    rt = ScriptedRuntime({"default": {"outputs": ["A1\n\n", "B2\n\n", "C3\n\n", "#### 7"]}})
    config = RunConfig(
        strategy="beam",
        strategy_options={"width": 1, "expansions_per_beam": 1},
        memory="sliding_window",
        memory_options={"max_tokens": 7},
    )
    result = await Orchestrator(rt).run("q", config)
    assert result.answer == "7"
    assert [c.prompt_text for c in rt.calls] == [
        CHATML_Q,
        CHATML_Q + "A1\n\n",
        CHATML_Q + "1\n\nB2\n\n",
        CHATML_Q + "2\n\nC3\n\n",
    ]


async def test_observe_drops_what_left_the_window_from_the_kv() -> None:
    rt = ScriptedRuntime()
    ctx = context(Orchestrator(rt))
    steps = await _chain(ctx, ["A1\n\n", "B2\n\n"])
    memory = SlidingWindowMemory(SlidingWindowConfig(max_tokens=5))
    base = await memory.base_ids(ctx)
    handle = await rt.open_sequence(Prompt(token_ids=tuple(base)))
    await handle.extend([t for n in steps for t in n.token_ids])
    await memory.observe(steps[-1], ctx, handle)
    assert await rt.detokenize(handle.token_ids) == CHATML_Q + "\nB2\n\n"
    assert (rt.stats.num_drops, rt.stats.num_reencoded_tokens) == (1, 5)
    await memory.observe(steps[-1], ctx, handle)  # within the window: nothing to drop
    assert rt.stats.num_drops == 1
    await handle.release()


async def test_without_range_drops_the_handle_is_left_alone() -> None:
    rt = ScriptedRuntime(capabilities=ALL_CAPABILITIES & ~Capability.KV_RANGE_DROP)
    ctx = context(Orchestrator(rt))
    (step,) = await _chain(ctx, ["A1\n\nB2\n\n"])
    memory = SlidingWindowMemory(SlidingWindowConfig(max_tokens=2))
    handle = await rt.open_sequence(Prompt(token_ids=tuple(await memory.base_ids(ctx))))
    await handle.extend(step.token_ids)
    await memory.observe(step, ctx, handle)
    assert len(handle.token_ids) == len(await memory.base_ids(ctx)) + 8
    assert ctx.fallbacks == [
        "sliding_window: default cannot drop KV ranges; the window applies to prompts"
    ]


async def test_a_foreign_handle_is_refused() -> None:
    rt = ScriptedRuntime()
    ctx = context(Orchestrator(rt))
    (step,) = await _chain(ctx, ["A1\n\n"])
    handle = await rt.open_sequence("another prompt")
    memory = SlidingWindowMemory(SlidingWindowConfig(max_tokens=1))
    with pytest.raises(ValueError, match="does not start with this memory's question prompt"):
        await memory.observe(step, ctx, handle)
