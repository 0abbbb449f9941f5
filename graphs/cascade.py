"""The ``cascade`` graph: answer with a fast graph; escalate to a slow graph when a gate fires.

After SafeLens (arXiv 2605.17610: a fast screen for every input, slow structured
chain-of-thought for a hard subset; the escalation trigger is not published, so the gate is a
plugin: ``--gate confidence|disagreement|judge``, see :mod:`orchestrator.plugins.gates`) and
Dualformer (arXiv 2410.09918, ``facebookresearch/dualformer``: one model whose mode is chosen
by a forced prefix token after BOS, ``plan`` = fast, ``create`` = slow, none = the model
decides).

1. The fast tier runs its graph (default: ``search`` with one sample, logprobs recorded).
2. The gate decides on the fast answer's node (no answer node: escalate, without asking).
3. If it escalates, the slow tier runs its graph (default: ``search`` with
   ``self_consistency`` over 4 samples) and its answer is the run's (the fast answer when the
   slow tier gives none). A budget that stopped the fast tier stops the cascade there.

Each tier (``fast``, ``slow``) names a graph and its options, the strategy, scorer, router
and memory it runs with (``None``: the graph's defaults) and the runtime (``None``: the run's).
A tier runs inside :meth:`RunContext.stage`, so its components are its own, on the run's
graph, budget and runtimes. ``mode_prefix`` is the Dualformer mode control: forced at the
start of the tier's answer, through the tier graph's ``assistant_prefix`` option; a graph
without that option runs without it and the fallback is reported. A mode token only selects a
mode on a model trained with it (Dualformer's maze models); on others it is plain text.

Records ``ctx.meta["cascade"]``: ``escalated``, the gate's ``reason`` and ``confidence``, and
per tier (and for the gate) the nodes it added, the usage it spent (generated, prompt and
cached tokens, runtime and scorer calls), its ``cost`` (generated tokens × the writing
runtime's ``cost_per_token``), its wall seconds and its answer.

Unspecified by the sources, chosen here: the default tiers and gate, and that a slow tier
without an answer falls back to the fast one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator import BudgetUsage, ConfigError, GateDecision, GraphSpec, RunConfig, hookimpl

if TYPE_CHECKING:
    from orchestrator import Node, RunContext

__all__ = ["CascadeConfig", "CascadeGraph", "TierConfig"]

_COMPONENTS = ("strategy", "scorer", "router", "memory")


class TierConfig(BaseModel):
    """One tier of the cascade: a graph and the components it runs with."""

    model_config = ConfigDict(extra="forbid")

    graph: str = "search"
    graph_options: dict[str, Any] = Field(default_factory=dict)
    strategy: str | None = None
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    scorer: str | None = None
    scorer_options: dict[str, Any] = Field(default_factory=dict)
    router: str | None = None
    router_options: dict[str, Any] = Field(default_factory=dict)
    memory: str | None = None
    memory_options: dict[str, Any] = Field(default_factory=dict)
    #: The runtime this tier generates on unless its router picks (None: the run's).
    runtime: str | None = None
    #: Dualformer mode control: text forced at the start of the answer (None: no prefix).
    mode_prefix: str | None = None


def _fast() -> TierConfig:
    return TierConfig(
        strategy="best_of_n",
        strategy_options={"n": 1},
        graph_options={"record_logprobs": True},
    )


def _slow() -> TierConfig:
    return TierConfig(strategy="self_consistency", strategy_options={"n": 4})


class CascadeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fast: TierConfig = Field(default_factory=_fast)
    slow: TierConfig = Field(default_factory=_slow)
    default_gate: str = "confidence"


def _delta(before: BudgetUsage, after: BudgetUsage) -> dict[str, Any]:
    return {
        "generated_tokens": after.generated_tokens - before.generated_tokens,
        "prompt_tokens": after.prompt_tokens - before.prompt_tokens,
        "cached_tokens": after.cached_tokens - before.cached_tokens,
        "runtime_calls": after.runtime_calls - before.runtime_calls,
        "scorer_calls": after.scorer_calls - before.scorer_calls,
        "seconds": after.wall_seconds - before.wall_seconds,
    }


class CascadeGraph:
    def __init__(self, config: CascadeConfig) -> None:
        self.config = config

    async def run(self, ctx: RunContext) -> str | None:
        gate = ctx.component("gate", self.config.default_gate)
        record: dict[str, Any] = {"escalated": False, "reason": "", "confidence": None}
        ctx.meta["cascade"] = record
        fast_answer, fast_node = await self._tier(ctx, "fast", self.config.fast, record)
        if ctx.stopped_by is not None:
            record["reason"] = f"budget: {ctx.stopped_by.limit}"
            return fast_answer
        if fast_node is None:
            decision = GateDecision(escalate=True, reason="the fast tier gave no answer")
        else:
            before, first = ctx.budget.snapshot(), len(ctx.graph)
            decision = await gate.decide(fast_node, ctx)
            record["gate"] = self._usage(ctx, before, first)
        record.update(
            escalated=decision.escalate, reason=decision.reason, confidence=decision.confidence
        )
        if not decision.escalate:
            return fast_answer
        slow_answer, slow_node = await self._tier(ctx, "slow", self.config.slow, record)
        if slow_node is None:
            ctx.set_answer(fast_answer, fast_node)
            return fast_answer
        ctx.set_answer(slow_answer, slow_node)
        return slow_answer

    async def _tier(
        self, ctx: RunContext, name: str, tier: TierConfig, record: dict[str, Any]
    ) -> tuple[str | None, Node | None]:
        """Run one tier; its answer and answer node (None when it set none)."""
        spec = ctx.plugins.registry.get("graph", tier.graph)
        options = dict(tier.graph_options)
        if tier.mode_prefix is not None:
            if "assistant_prefix" in spec.config_model.model_fields:
                options["assistant_prefix"] = tier.mode_prefix
            else:
                ctx.report_fallback(
                    f"cascade: graph {tier.graph!r} cannot force a mode prefix; "
                    f"the {name} tier ran without it"
                )
        try:
            graph_config = spec.config_model.model_validate(options)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            raise ConfigError(message, field=f"graph.{name}.graph_options.{where}") from exc
        fields = {c: getattr(tier, c) for c in _COMPONENTS}
        fields.update({f"{c}_options": getattr(tier, f"{c}_options") for c in _COMPONENTS})
        stage = RunConfig.build(
            **{
                **ctx.config.model_dump(),
                **fields,
                "graph": tier.graph,
                "graph_options": options,
                "runtime": tier.runtime or ctx.config.runtime,
            }
        )
        for kind, model in spec.node_kinds.items():
            ctx.graph.kinds.setdefault(kind, model)
        before, first = ctx.budget.snapshot(), len(ctx.graph)
        with ctx.stage(stage):
            answer = await spec.factory(graph_config).run(ctx)
        usage = self._usage(ctx, before, first)
        answer_node = ctx.answer_node if ctx.answer_node in usage["nodes"] else None
        if answer is None and answer_node is not None:
            answer = ctx.answer
        record[name] = {"graph": tier.graph, "answer": answer, **usage}
        return answer, None if answer_node is None else ctx.graph[answer_node]

    def _usage(self, ctx: RunContext, before: BudgetUsage, first: int) -> dict[str, Any]:
        """What happened since ``before`` (a budget snapshot, the graph's size ``first``)."""
        nodes = list(ctx.graph)[first:]
        cost = sum(
            n.usage.generated_tokens * ctx.runtime(n.runtime).cost_per_token
            for n in nodes
            if n.runtime is not None
        )
        return {
            "nodes": [n.id for n in nodes],
            **_delta(before, ctx.budget.snapshot()),
            "cost": cost,
        }


@hookimpl
def orchestrator_add_graphs() -> list[GraphSpec]:
    return [
        GraphSpec(
            name="cascade",
            factory=CascadeGraph,
            config_model=CascadeConfig,
            description="answer with a fast graph; escalate to a slow graph when a gate fires "
            "(SafeLens / Dualformer)",
        )
    ]
