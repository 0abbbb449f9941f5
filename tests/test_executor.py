"""The executor: runs, budgets, cancellation, failure isolation, hooks, determinism."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import (
    ConfigError,
    GenerateRequest,
    NodeStatus,
    Orchestrator,
    RunConfig,
    RunContext,
    RunResult,
    SamplingParams,
    UnknownComponentError,
    hookimpl,
)
from orchestrator.testing import ScriptedRuntime

from .conftest import QUESTION, graph_plugin


def comparable(result: RunResult) -> list[dict[str, Any]]:
    """The run graph without wall-clock timings."""
    return [n.model_dump(mode="json", exclude={"started_at", "ended_at"}) for n in result.graph]


async def test_best_of_n_search_on_scripted_runtime(arithmetic_runtime: ScriptedRuntime) -> None:
    orch = Orchestrator(arithmetic_runtime)
    result = await orch.run(QUESTION, reference="7", strategy_options={"n": 4})
    assert result.stop_reason == "done"
    assert result.answer == "7"
    assert result.answer_node == "r.1"  # first of the two correct candidates
    by_id = {n.id: n for n in result.graph}
    assert [by_id[f"r.{i}"].score for i in range(4)] == [0.0, 1.0, 0.0, 1.0]
    assert [by_id[f"r.{i}"].attrs.answer for i in range(4)] == ["8", "7", None, "7"]  # type: ignore[union-attr]
    assert all(n.status is NodeStatus.DONE for n in result.graph)
    assert result.usage.runtime_calls == 4
    assert result.usage.scorer_calls == 4
    assert result.usage.nodes == 5
    assert result.usage.generated_tokens == sum(n.usage.generated_tokens for n in result.graph)


async def test_same_seed_same_run_graph() -> None:
    def runtime() -> ScriptedRuntime:
        return ScriptedRuntime(
            {"default": {"outputs": ["a", "b", "c", "#### 1", "#### 2"], "pick": "seed"}}
        )

    results = []
    for _ in range(2):
        orch = Orchestrator(runtime())
        results.append(await orch.run("q", seed=11, strategy_options={"n": 6}))
    assert comparable(results[0]) == comparable(results[1])
    other = await Orchestrator(runtime()).run("q", seed=12, strategy_options={"n": 6})
    assert comparable(other) != comparable(results[0])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(1, 12), limit=st.integers(1, 120), concurrency=st.integers(1, 8))
def test_token_budget_never_exceeded_and_every_node_final(
    n: int, limit: int, concurrency: int
) -> None:
    runtime = ScriptedRuntime({"default": {"outputs": ["x" * 30 + " #### 3"], "token_delay": 0.0}})

    async def go() -> RunResult:
        orch = Orchestrator(runtime)
        return await orch.run(
            "q",
            strategy_options={"n": n},
            budget={"max_generated_tokens": limit},
            max_concurrency=concurrency,
        )

    result = anyio.run(go)
    assert result.usage.generated_tokens <= limit
    assert all(node.status.final for node in result.graph)
    expected_stop = "budget" if 38 * n > limit else "done"  # 37 chars + EOS per sample
    assert result.stop_reason == expected_stop


async def test_wall_clock_deadline_keeps_partial_output() -> None:
    runtime = ScriptedRuntime(
        {"default": {"outputs": ["abcdefghijklmnopqrstuvwxyz"], "token_delay": 0.05}}
    )
    orch = Orchestrator(runtime)
    result = await orch.run("q", strategy_options={"n": 2}, budget={"max_wall_seconds": 0.3})
    assert result.stop_reason == "budget"
    assert result.stop_detail == "max_wall_seconds"
    children = [n for n in result.graph if n.kind == "search"]
    assert [c.status for c in children] == [NodeStatus.CANCELLED] * 2
    for child in children:
        assert 1 <= len(child.text) < 26
        assert "abcdefghijklmnopqrstuvwxyz".startswith(child.text)
        assert child.usage.generated_tokens == len(child.text)
    assert result.usage.generated_tokens == sum(len(c.text) for c in children)
    assert len(runtime.aborted) == 2


async def test_failing_branch_is_isolated() -> None:
    runtime = ScriptedRuntime(
        {
            "default": {
                "outputs": [
                    {"raise_error": "worker crashed", "raise_as": "RuntimeUnavailable"},
                    "#### 5",
                ]
            }
        }
    )
    result = await Orchestrator(runtime).run("q", strategy_options={"n": 3}, max_concurrency=1)
    statuses = {n.id: n.status for n in result.graph}
    assert statuses == {
        "r": NodeStatus.DONE,
        "r.0": NodeStatus.FAILED,
        "r.1": NodeStatus.DONE,
        "r.2": NodeStatus.DONE,
    }
    assert result.graph["r.0"].error == "RuntimeUnavailable: runtime 'scripted': worker crashed"
    assert result.answer == "5"
    assert result.stop_reason == "done"


async def test_fail_fast_ends_the_run_and_returns_the_graph() -> None:
    runtime = ScriptedRuntime(
        {"default": {"outputs": [{"raise_error": "worker crashed"}, "#### 5"]}}
    )
    result = await Orchestrator(runtime).run(
        "q", strategy_options={"n": 3}, max_concurrency=1, on_error="fail_fast"
    )
    assert result.stop_reason == "error"
    assert result.stop_detail is not None and "worker crashed" in result.stop_detail
    assert result.graph["r.0"].status is NodeStatus.FAILED
    assert all(n.status.final for n in result.graph)


async def test_cancelled_run_returns_its_partial_graph() -> None:
    runtime = ScriptedRuntime(
        {"default": {"outputs": ["#### 1", "slow answer"], "token_delay": 0.0}}
    )
    runtime_slow = ScriptedRuntime({"default": {"outputs": ["x" * 100], "token_delay": 0.02}})
    started = anyio.Event()

    class Watch:
        @hookimpl
        def orchestrator_node_start(self, ctx: RunContext, node: Any) -> None:
            started.set()

    orch = Orchestrator({"slow": runtime_slow, "fast": runtime}, plugins=[Watch()])
    run = orch.prepare("q", runtime="slow", strategy_options={"n": 2})
    results: list[RunResult] = []

    async def execute() -> None:
        results.append(await run.execute())

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        await started.wait()
        await anyio.sleep(0.1)
        run.cancel()
    (result,) = results
    assert result.stop_reason == "cancelled"
    assert {n.status for n in result.graph if n.kind == "search"} == {NodeStatus.CANCELLED}
    assert all(len(n.text) > 0 for n in result.graph if n.kind == "search")


async def test_cancel_subtree_cancels_only_its_calls() -> None:
    runtime = ScriptedRuntime(
        {
            "rules": [{"contains": "slow", "outputs": ["z" * 200], "token_delay": 0.01}],
            "default": {"outputs": ["done"]},
        }
    )

    async def driver(ctx: RunContext) -> str | None:
        a = ctx.add_node("step", [ctx.root])
        b = ctx.add_node("step", [ctx.root])
        a_child = ctx.add_node("step", [a])

        async def grow(node: Any, prompt: str) -> None:
            async with ctx.running(node):
                await ctx.generate(
                    node,
                    GenerateRequest(prompt=prompt, sampling=SamplingParams(max_new_tokens=300)),
                )

        async with anyio.create_task_group() as tg:
            tg.start_soon(grow, a_child, "slow")
            tg.start_soon(grow, b, "fast")
            await anyio.sleep(0.1)
            ctx.cancel_subtree(a.id)
        return ctx.graph[b.id].text

    orch = Orchestrator(runtime, plugins=[graph_plugin("two-branches", driver)])
    result = await orch.run("q", graph="two-branches")
    assert result.answer == "done"
    assert result.graph["r.0.0"].status is NodeStatus.CANCELLED
    assert 0 < len(result.graph["r.0.0"].text) < 200
    assert result.graph["r.0"].status is NodeStatus.CANCELLED  # never ran
    assert result.graph["r.1"].status is NodeStatus.DONE
    assert [c.prompt_text for c in runtime.aborted] == ["slow"]


async def test_no_task_outlives_its_run(arithmetic_runtime: ScriptedRuntime) -> None:
    before = len(asyncio.all_tasks())
    await Orchestrator(arithmetic_runtime).run(
        QUESTION, strategy_options={"n": 4}, budget={"max_wall_seconds": 5}
    )
    assert len(asyncio.all_tasks()) == before


async def test_lifecycle_hooks_fire_in_order(arithmetic_runtime: ScriptedRuntime) -> None:
    events: list[str] = []

    class Recorder:
        @hookimpl
        def orchestrator_run_start(self, ctx: RunContext) -> None:
            events.append(f"run_start {ctx.root.id}")

        @hookimpl
        def orchestrator_node_start(self, ctx: RunContext, node: Any) -> None:
            events.append(f"start {node.id}")

        @hookimpl
        def orchestrator_node_end(self, ctx: RunContext, node: Any) -> None:
            events.append(f"end {node.id} {node.status.value}")

        @hookimpl
        def orchestrator_run_end(self, ctx: RunContext, result: RunResult) -> None:
            events.append(f"run_end {result.stop_reason}")

    orch = Orchestrator(arithmetic_runtime, plugins=[Recorder()])
    await orch.run(QUESTION, strategy_options={"n": 2}, max_concurrency=1)
    assert events[0] == "run_start r"
    assert events[-1] == "run_end done"
    assert sorted(events[1:-1]) == ["end r.0 done", "end r.1 done", "start r.0", "start r.1"]


async def test_router_picks_runtime_per_node() -> None:
    cheap = ScriptedRuntime({"default": {"outputs": ["#### 1"]}}, model="cheap")
    big = ScriptedRuntime({"default": {"outputs": ["#### 2"]}}, model="big")

    class EvenOdd:
        def __init__(self, config: Any) -> None:
            pass

        async def route(self, request: Any, node: Any, ctx: RunContext) -> str:
            return "big" if node.id.endswith(("1", "3")) else "cheap"

    from orchestrator import ComponentSpec

    class RouterPlugin:
        @hookimpl
        def orchestrator_add_routers(self) -> list[ComponentSpec]:
            return [ComponentSpec(name="even-odd", factory=EvenOdd)]

    orch = Orchestrator({"cheap": cheap, "big": big}, plugins=[RouterPlugin()])
    result = await orch.run("q", router="even-odd", strategy_options={"n": 4})
    assert [(n.id, n.runtime, n.model) for n in result.graph if n.kind == "search"] == [
        ("r.0", "cheap", "cheap"),
        ("r.1", "big", "big"),
        ("r.2", "cheap", "cheap"),
        ("r.3", "big", "big"),
    ]


async def test_config_errors_are_raised_before_running(arithmetic_runtime: ScriptedRuntime) -> None:
    orch = Orchestrator(arithmetic_runtime)
    with pytest.raises(UnknownComponentError, match=r"unknown graph 'nope' \(registered: .*search"):
        await orch.run("q", graph="nope")
    with pytest.raises(
        ConfigError, match=r"^strategy\.n: Input should be greater than or equal to 1$"
    ):
        await orch.run("q", strategy_options={"n": 0})
    with pytest.raises(ConfigError, match=r"^runtime: no runtime named 'gpu' \(have: default\)$"):
        await orch.run("q", RunConfig(runtime="gpu"))
    with pytest.raises(
        ConfigError, match=r"^router: options given, but graph 'search' uses no router$"
    ):
        await orch.run("q", router_options={"x": 1})
    assert arithmetic_runtime.calls == []


async def test_result_json_round_trip(arithmetic_runtime: ScriptedRuntime) -> None:
    result = await Orchestrator(arithmetic_runtime).run(QUESTION, strategy_options={"n": 2})
    loaded = RunResult.from_dict(result.to_dict())
    assert loaded.to_dict() == result.to_dict()
    assert list(loaded.graph) == list(result.graph)
