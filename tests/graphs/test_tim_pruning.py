"""The ``tim_pruning`` memory on its own: the stack, the buffer, what it edits."""

from __future__ import annotations

from typing import Any

import pytest
from orchestrator.graphs.tim.builder import TimAttrs
from orchestrator.plugins.memory.tim_pruning import TimPruningConfig, TimPruningMemory

from orchestrator import Orchestrator, SequenceHandle
from orchestrator.testing import ScriptedRuntime

pytestmark = pytest.mark.anyio


class Memory:
    """A working memory that records the spans it is asked to remove."""

    def __init__(self) -> None:
        self.removed: list[tuple[int, int, bool]] = []
        self.token_ids = [1, 2, 3]

    async def remove(self, start: int, end: int, handle: SequenceHandle | None) -> Any:
        self.removed.append((start, end, handle is not None))
        return (start, end)


async def context_with_lists(n: int) -> tuple[Any, list[Any]]:
    orch = Orchestrator(ScriptedRuntime())
    run = orch.prepare("q", graph="search")
    ctx = run.ctx
    lists = []
    for i in range(n):
        node = ctx.add_node(
            "subtasks", [ctx.root], TimAttrs(field="subtasks", start=10 * i, end=10 * i + 5)
        )
        ctx.add_node("task", [node], TimAttrs(field="task"))
        lists.append(node)
    return ctx, lists


@pytest.mark.parametrize(
    ("buffer", "expected"), [(2, [0]), (1, [0, 1]), (0, [0, 1, 2]), (None, [])]
)
async def test_the_oldest_lists_above_the_buffer_are_pruned_in_order(
    buffer: int | None, expected: list[int]
) -> None:
    ctx, lists = await context_with_lists(3)
    memory, working = TimPruningMemory(TimPruningConfig(buffer=buffer)), Memory()
    memory.bind(working)
    for node in lists:
        await memory.observe(node, ctx, handle=object())  # type: ignore[arg-type]
    assert [r.node_id for r in memory.pruned] == [lists[i].id for i in expected]
    assert working.removed == [(10 * i, 10 * i + 5, True) for i in expected]
    pruned = {n.id for n in ctx.graph if n.pruned}
    assert pruned == {d.id for i in expected for d in (lists[i], *ctx.graph.children(lists[i].id))}
    assert (await memory.context(lists[0], ctx)).token_ids == (1, 2, 3)


async def test_other_nodes_are_ignored_and_an_unbound_memory_says_why() -> None:
    ctx, lists = await context_with_lists(1)
    memory = TimPruningMemory(TimPruningConfig(buffer=0))
    await memory.observe(ctx.root, ctx)
    assert memory.stack == []
    with pytest.raises(
        RuntimeError, match="tim_pruning has no working memory: the TIM graph binds one"
    ):
        await memory.observe(lists[0], ctx)
