"""The budget router picks per node by the cost budget left and each runtime's cost."""

from __future__ import annotations

import pytest
from orchestrator.plugins.routers.budget_router import BudgetRouter, BudgetRouterConfig

from orchestrator import (
    BudgetLimits,
    ConfigError,
    GenerateRequest,
    Orchestrator,
    RunConfig,
    RunContext,
    SamplingParams,
)
from orchestrator.testing import ScriptedRuntime

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def _runtimes() -> dict[str, ScriptedRuntime]:
    step = {"default": {"outputs": ["abcdefghij\n\n"]}}  # 10 tokens and the delimiter
    return {
        "small": ScriptedRuntime(step, model="small", cost_per_token=0.1),
        "large": ScriptedRuntime(step, model="large", cost_per_token=1.0),
    }


def _request(max_new_tokens: int, n: int = 1) -> GenerateRequest:
    return GenerateRequest(prompt="q", sampling=SamplingParams(max_new_tokens=max_new_tokens, n=n))


def _ctx(**budget: int) -> RunContext:
    orch = Orchestrator(_runtimes())  # type: ignore[arg-type]
    return orch.prepare(QUESTION, RunConfig(budget=BudgetLimits(**budget))).ctx


async def test_without_a_budget_the_costliest_runtime_is_preferred() -> None:
    ctx = _ctx()
    router = BudgetRouter(BudgetRouterConfig())
    assert router.candidates(ctx) == ["large", "small"]
    assert await router.route(_request(100), ctx.root, ctx) == "large"
    assert ctx.meta["budget_router"] == [
        {"node": "r", "runtime": "large", "left": None, "price": 100.0}
    ]


async def test_the_token_budget_is_priced_at_the_costliest_runtime() -> None:
    ctx = _ctx(max_generated_tokens=400)
    router = BudgetRouter(BudgetRouterConfig(share=0.25))
    # left = 400 tokens × 1.0: large costs 100 ≤ 0.25 × 400.
    assert await router.route(_request(100), ctx.root, ctx) == "large"
    # 101 tokens on large cost 101 > 100; on small 10.1 fits.
    assert await router.route(_request(101), ctx.root, ctx) == "small"
    ctx.budget.reserve_tokens(380)  # in flight elsewhere: 20 tokens left, priced 20.0
    assert await router.route(_request(5), ctx.root, ctx) == "large"
    assert await router.route(_request(6), ctx.root, ctx) == "small"
    # Nothing fits (60 × 0.1 = 6 > 5): the cheapest runtime.
    assert await router.route(_request(20, n=3), ctx.root, ctx) == "small"
    lefts = [entry["left"] for entry in ctx.meta["budget_router"]]
    assert lefts == [400.0, 400.0, 20.0, 20.0, 20.0]


async def test_max_cost_counts_what_each_runtime_wrote() -> None:
    ctx = _ctx()
    router = BudgetRouter(BudgetRouterConfig(max_cost=100.0, share=0.5))
    a = ctx.add_node("search", [ctx.root])
    b = ctx.add_node("search", [ctx.root])
    await ctx.generate(a, _request(64), runtime="large")  # 13 tokens (with EOS) × 1.0
    await ctx.generate(b, _request(64), runtime="small")  # 13 tokens × 0.1
    assert a.usage.generated_tokens == b.usage.generated_tokens == 13
    spent = 13 * 1.0 + 13 * 0.1
    assert router.cost_left(ctx, ["large", "small"]) == pytest.approx(100.0 - spent)
    limit = int(0.5 * (100.0 - spent))
    assert await router.route(_request(limit), ctx.root, ctx) == "large"
    assert await router.route(_request(limit + 1), ctx.root, ctx) == "small"


async def test_preference_order_is_configurable_and_checked() -> None:
    ctx = _ctx(max_generated_tokens=1000)
    router = BudgetRouter(BudgetRouterConfig(runtimes=("small", "large")))
    assert await router.route(_request(10), ctx.root, ctx) == "small"
    bad = BudgetRouter(BudgetRouterConfig(runtimes=("small", "huge")))
    with pytest.raises(ConfigError, match=r"router.runtimes: no runtime named 'huge'"):
        await bad.route(_request(10), ctx.root, ctx)


async def test_a_search_run_moves_to_the_cheap_runtime_as_the_budget_drains() -> None:
    def respond(prompt_text: str, sampling: SamplingParams, index: int) -> str:
        return "Next.\n\n" if prompt_text.count("Next.") < 10 else "#### 7"

    runtimes = {
        "small": ScriptedRuntime(responder=respond, model="small", cost_per_token=0.1),
        "large": ScriptedRuntime(responder=respond, model="large", cost_per_token=1.0),
    }
    config = RunConfig(
        strategy="beam",
        strategy_options={"width": 1, "expansions_per_beam": 1},
        graph_options={"max_step_tokens": 16},
        router="budget",
        budget=BudgetLimits(max_generated_tokens=100),
    )
    result = await Orchestrator(runtimes).run(QUESTION, config)  # type: ignore[arg-type]
    routes = [entry["runtime"] for entry in result.meta["budget_router"]]
    # A step reserves 16 tokens and writes 7: large while 16 ≤ 0.25 × left, i.e. while at
    # least 64 of the 100 tokens are left (after 0..5 steps), then small.
    assert routes == ["large"] * 6 + ["small"] * 5
    assert [len(rt.calls) for rt in runtimes.values()] == [5, 6]
    assert result.answer == "7"
    assert result.usage.generated_tokens == 11 * 7
