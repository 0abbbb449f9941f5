"""Budget-aware routing: the preferred runtime while the budget affords it, cheaper ones after.

No paper: a cost-pacing policy of ours, in the spirit of the cost-aware cascades and routers
(FrugalGPT, Chen et al., arXiv 2305.05176) but decided per node from the run's own budget,
with no learned scorer. Each runtime's cost is its ``cost_per_token`` (relative cost of one
generated token).

Per generation the router prices the request's worst case on each candidate runtime,
``max_new_tokens × n × cost_per_token``, and picks the first candidate, in preference order,
whose price is at most ``share`` × the cost budget left; when none fits, the cheapest
candidate. Without any budget it picks the first candidate.

The cost budget left is, in cost units:

- with ``max_cost``: ``max_cost`` minus what the run has spent, i.e. the generated tokens of
  every node times the ``cost_per_token`` of the runtime that wrote them (calls in flight
  count once they end);
- else, with the run's ``max_generated_tokens``: ``tokens_left`` priced at the costliest
  candidate's ``cost_per_token`` (what the costliest runtime could still write; reserved
  tokens of calls in flight count as spent);
- else there is none.

Parameters: ``runtimes`` (candidate names in preference order; default: every runtime of the
run, costliest first, ties in the orchestrator's order), ``share`` (default 0.25: a request may
take at most a quarter of what is left; ours), ``max_cost`` (default None).

Records: per routed node, ``ctx.meta["budget_router"]``: ``{"node", "runtime", "left",
"price"}`` (``left`` None without a budget).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ComponentSpec, ConfigError, GenerateRequest, hookimpl

if TYPE_CHECKING:
    from orchestrator import Node, RunContext

__all__ = ["BudgetRouter", "BudgetRouterConfig", "spent_cost"]


class BudgetRouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runtimes: tuple[str, ...] | None = None
    share: float = Field(0.25, gt=0.0, le=1.0)
    max_cost: float | None = Field(None, ge=0.0)


def spent_cost(ctx: RunContext) -> float:
    """Generated tokens of every node times its runtime's ``cost_per_token``."""
    total = 0.0
    for node in ctx.graph:
        if node.runtime is not None and node.usage.generated_tokens:
            total += node.usage.generated_tokens * ctx.runtime(node.runtime).cost_per_token
    return total


class BudgetRouter:
    """Picks per node by the budget left and each runtime's cost (see the module doc)."""

    def __init__(self, config: BudgetRouterConfig) -> None:
        self.config = config

    def candidates(self, ctx: RunContext) -> list[str]:
        """Candidate runtime names in preference order.

        :raises ConfigError: if a configured name is not a runtime of the run.
        """
        if self.config.runtimes is not None:
            for name in self.config.runtimes:
                if name not in ctx.runtimes:
                    raise ConfigError(
                        f"no runtime named {name!r} (have: {', '.join(ctx.runtimes)})",
                        field="router.runtimes",
                    )
            return list(self.config.runtimes)
        names = list(ctx.runtimes)
        return sorted(names, key=lambda n: -ctx.runtimes[n].cost_per_token)

    def cost_left(self, ctx: RunContext, names: list[str]) -> float | None:
        """The cost budget left, in cost units (None: unlimited)."""
        if self.config.max_cost is not None:
            return max(0.0, self.config.max_cost - spent_cost(ctx))
        tokens_left = ctx.budget.tokens_left
        if tokens_left is None:
            return None
        return tokens_left * max(ctx.runtimes[n].cost_per_token for n in names)

    async def route(self, request: GenerateRequest, node: Node, ctx: RunContext) -> str:
        names = self.candidates(ctx)
        left = self.cost_left(ctx, names)
        sampling = request.sampling
        num_tokens = sampling.max_new_tokens * sampling.n
        prices = {n: num_tokens * ctx.runtimes[n].cost_per_token for n in names}
        if left is None:
            chosen = names[0]
        else:
            affordable = [n for n in names if prices[n] <= self.config.share * left]
            chosen = affordable[0] if affordable else min(names, key=lambda n: prices[n])
        ctx.meta.setdefault("budget_router", []).append(
            {"node": node.id, "runtime": chosen, "left": left, "price": prices[chosen]}
        )
        return chosen


@hookimpl
def orchestrator_add_routers() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="budget",
            factory=BudgetRouter,
            config_model=BudgetRouterConfig,
            description="the preferred runtime while the budget affords it, then cheaper ones "
            "(by cost_per_token)",
        )
    ]
