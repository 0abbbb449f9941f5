"""Executor overhead: a no-op tree through ``Orchestrator.run`` vs bare anyio tasks (vs LangGraph).

The tree has fan-out 10 and depth 4 below the root: 10 + 100 + 1,000 + 10,000 = 11,110 nodes.
Ours: every node is a pydantic ``Node`` in the run graph, runs under ``ctx.running`` (status,
timings, hooks, budget, cancel scope), each fan-out in its own task group. The baseline runs
the same tree as bare anyio tasks, one task group per fan-out. Prints one JSON line.

    python bench/executor_overhead.py [--fanout 10] [--depth 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import operator
import time
from typing import Annotated, Any, TypedDict

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, ConfigDict

from orchestrator import GraphSpec, Node, Orchestrator, RunContext, hookimpl
from orchestrator.testing import ScriptedRuntime


class State(TypedDict):
    """LangGraph state: the node's level, and a visit counter summed over branches."""

    level: int
    visited: Annotated[int, operator.add]


class TreeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fanout: int = 10
    depth: int = 4


class NoOpTree:
    """Grows a full tree of no-op nodes, each fan-out in a task group."""

    def __init__(self, config: TreeConfig) -> None:
        self.config = config

    async def run(self, ctx: RunContext) -> str | None:
        await self._children(ctx, ctx.root, 1)
        return "done"

    async def _children(self, ctx: RunContext, parent: Node, level: int) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(self.config.fanout):
                tg.start_soon(self._node, ctx, ctx.add_node("step", [parent]), level)

    async def _node(self, ctx: RunContext, node: Node, level: int) -> None:
        async with ctx.running(node):
            if level < self.config.depth:
                await self._children(ctx, node, level + 1)


class BenchPlugin:
    @hookimpl
    def orchestrator_add_graphs(self) -> list[GraphSpec]:
        return [GraphSpec(name="noop-tree", factory=NoOpTree, config_model=TreeConfig)]


async def bare_anyio(fanout: int, depth: int) -> int:
    count = 0

    async def node(level: int) -> None:
        nonlocal count
        count += 1
        if level < depth:
            async with anyio.create_task_group() as tg:
                for _ in range(fanout):
                    tg.start_soon(node, level + 1)

    async with anyio.create_task_group() as tg:
        for _ in range(fanout):
            tg.start_soon(node, 1)
    return count


def num_nodes(fanout: int, depth: int) -> int:
    return sum(fanout**level for level in range(1, depth + 1))


def best_of(repeats: int, fn: Any) -> float:
    """The fastest of ``repeats`` runs; ``fn`` returns the seconds it measured itself."""
    return min(fn() for _ in range(repeats))


def time_bare_anyio(fanout: int, depth: int) -> float:
    async def go() -> float:
        start = time.perf_counter()
        assert await bare_anyio(fanout, depth) == num_nodes(fanout, depth)
        return time.perf_counter() - start

    return anyio.run(go)


def time_ours(fanout: int, depth: int, provider: TracerProvider | None) -> float:
    """Seconds of one ``Orchestrator.run`` (plugin loading happens before, once per
    orchestrator, and is not per-run cost); with a provider, flushing the spans counts."""
    orch = Orchestrator(
        {"scripted": ScriptedRuntime()}, plugins=[BenchPlugin()], tracer_provider=provider
    )
    orch.registry  # noqa: B018 - build the registry outside the timed region

    async def go() -> float:
        start = time.perf_counter()
        result = await orch.run(
            "noop", graph="noop-tree", graph_options={"fanout": fanout, "depth": depth}
        )
        if isinstance(provider, TracerProvider):
            provider.force_flush()
        elapsed = time.perf_counter() - start
        assert result.usage.nodes == num_nodes(fanout, depth) + 1, result.usage
        assert result.stop_reason == "done", result.stop_detail
        return elapsed

    return anyio.run(go)


def langgraph_per_node_us(fanout: int, depth: int, repeats: int) -> float | None:
    """The same tree in LangGraph: each node fans out with ``Send`` to its children."""
    try:
        from langgraph.graph import START, StateGraph
        from langgraph.types import Command, Send
    except ImportError:
        return None

    # LangGraph reads these functions' type hints at runtime, so they name only module types.
    def children(level: int) -> Any:
        return [Send("node", {"level": level + 1, "visited": 0}) for _ in range(fanout)]

    def node(state: State) -> Any:
        level = state["level"]
        return Command(update={"visited": 1}, goto=children(level) if level < depth else [])

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_conditional_edges(START, lambda state: children(0))
    graph = builder.compile()
    expected = num_nodes(fanout, depth)

    def go() -> float:
        start = time.perf_counter()
        out = graph.invoke({"level": 0, "visited": 0}, {"recursion_limit": depth + 5})
        elapsed = time.perf_counter() - start
        assert out["visited"] == expected, out
        return elapsed

    return best_of(repeats, go) / expected * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanout", type=int, default=10)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-langgraph", action="store_true")
    args = parser.parse_args()
    n = num_nodes(args.fanout, args.depth)

    anyio_s = best_of(args.repeats, lambda: time_bare_anyio(args.fanout, args.depth))
    ours_s = best_of(args.repeats, lambda: time_ours(args.fanout, args.depth, None))

    def traced() -> float:
        provider = TracerProvider()
        provider.add_span_processor(
            BatchSpanProcessor(InMemorySpanExporter(), max_queue_size=65536)
        )
        try:
            return time_ours(args.fanout, args.depth, provider)
        finally:
            provider.shutdown()

    traced_s = best_of(args.repeats, traced)
    lg = None if args.no_langgraph else langgraph_per_node_us(args.fanout, args.depth, args.repeats)
    per_node = ours_s / n * 1e6
    print(
        json.dumps(
            {
                "case": f"fanout{args.fanout}_depth{args.depth}",
                "nodes": n,
                "per_node_us": round(per_node, 2),
                "per_node_us_traced": round(traced_s / n * 1e6, 2),
                "anyio_per_task_us": round(anyio_s / n * 1e6, 2),
                "ratio_vs_anyio": round(ours_s / anyio_s, 3),
                "ratio_vs_anyio_traced": round(traced_s / anyio_s, 3),
                "langgraph_per_node_us": None if lg is None else round(lg, 2),
                "langgraph_vs_ours": None if lg is None else round(lg / per_node, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
