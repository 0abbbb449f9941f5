"""The ``cascade`` graph escalates exactly when its gate fires, and accounts for each tier."""

from __future__ import annotations

import math
from typing import Any

import pytest

from orchestrator import (
    BudgetLimits,
    ComponentSpec,
    EmptyConfig,
    GateDecision,
    GraphSpec,
    Node,
    Orchestrator,
    RunConfig,
    RunContext,
    hookimpl,
)
from orchestrator.testing import ScriptedRuntime

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
FAST_TEXT = "3 + 4 = 8\n\n#### 8"


def _runtimes(fast_logprob: float = -0.25, fast_outputs: list[str] | None = None) -> dict:
    fast = ScriptedRuntime(
        {"default": {"outputs": fast_outputs or [FAST_TEXT], "then": "cycle"}},
        model="fast",
        cost_per_token=0.5,
        default_logprob=fast_logprob,
    )
    slow = ScriptedRuntime(
        {
            "default": {
                "outputs": ["3 + 4 = 7\n\n#### 7"],
                "scores": {"Yes": -0.1, "No": -2.5},
            }
        },
        model="slow",
        cost_per_token=2.0,
    )
    return {"fast": fast, "slow": slow}


def _config(gate: str = "confidence", **options: Any) -> RunConfig:
    return RunConfig(
        graph="cascade",
        graph_options={
            "fast": {
                "strategy": "best_of_n",
                "strategy_options": {"n": 1},
                "graph_options": {"record_logprobs": True},
                "runtime": "fast",
                **options.pop("fast", {}),
            },
            "slow": {
                "strategy": "self_consistency",
                "strategy_options": {"n": 2},
                "runtime": "slow",
                **options.pop("slow", {}),
            },
        },
        gate=gate,
        gate_options=options,
    )


async def test_a_confident_fast_answer_is_kept() -> None:
    runtimes = _runtimes(fast_logprob=-0.25)
    result = await Orchestrator(runtimes).run(QUESTION, _config(threshold=-1.0))
    record = result.meta["cascade"]
    assert result.answer == "8"
    assert record["escalated"] is False
    assert record["reason"] == "mean logprob -0.25 >= -1"
    assert record["confidence"] == -0.25
    assert "slow" not in record
    assert runtimes["slow"].calls == []
    # The fast tier: one sample of 17 characters plus the EOS, at 0.5 per token.
    fast = record["fast"]
    assert fast["nodes"] == ["r.0"] and fast["answer"] == "8"
    assert fast["generated_tokens"] == 18 and fast["cost"] == 9.0
    assert fast["runtime_calls"] == 1 and fast["scorer_calls"] == 1
    assert record["gate"]["nodes"] == [] and record["gate"]["runtime_calls"] == 0


async def test_an_unconfident_fast_answer_escalates_to_the_slow_tier() -> None:
    runtimes = _runtimes(fast_logprob=-1.5)
    result = await Orchestrator(runtimes).run(QUESTION, _config(threshold=-1.0))
    record = result.meta["cascade"]
    assert record["escalated"] is True
    assert record["reason"] == "mean logprob -1.5 < -1"
    assert result.answer == "7" and result.answer_node == "r.1"
    slow = record["slow"]
    assert slow["nodes"] == ["r.1", "r.2"] and slow["answer"] == "7"
    assert slow["generated_tokens"] == 2 * 18 and slow["cost"] == 2 * 18 * 2.0
    assert len(runtimes["slow"].calls) == 2
    assert result.usage.generated_tokens == 3 * 18


async def test_disagreement_among_fast_samples_escalates() -> None:
    outputs = ["#### 7", "#### 7", "#### 8"]
    for min_agreement, escalated in [(1.0, True), (0.6, False)]:
        runtimes = _runtimes(fast_outputs=outputs)
        config = _config(
            "disagreement",
            min_agreement=min_agreement,
            fast={"strategy": "self_consistency", "strategy_options": {"n": 3}},
        )
        result = await Orchestrator(runtimes).run(QUESTION, config)
        record = result.meta["cascade"]
        assert record["escalated"] is escalated
        assert record["confidence"] == pytest.approx(2 / 3)
        assert record["reason"].startswith("agreement 0.6667 of 3 samples")
        assert result.answer == "7"
        assert len(runtimes["slow"].calls) == (2 if escalated else 0)


async def test_a_single_fast_sample_cannot_show_agreement() -> None:
    runtimes = _runtimes()
    result = await Orchestrator(runtimes).run(QUESTION, _config("disagreement"))
    record = result.meta["cascade"]
    assert (record["escalated"], record["reason"]) == (True, "1 finished samples < 2")


async def test_the_judge_gate_reads_p_yes_through_one_scorer_call() -> None:
    for threshold, escalated in [(0.9, False), (0.95, True)]:
        runtimes = _runtimes()
        config = _config("judge", threshold=threshold, judge={"runtime": "slow"})
        result = await Orchestrator(runtimes).run(QUESTION, config)
        record = result.meta["cascade"]
        p_yes = 1.0 / (1.0 + math.exp(-2.5 + 0.1))
        assert record["confidence"] == pytest.approx(p_yes)
        assert record["escalated"] is escalated
        assert record["gate"]["scorer_calls"] == 1


async def test_dualformer_mode_prefixes_are_forced_per_tier() -> None:
    runtimes = _runtimes(fast_logprob=-3.0)
    config = _config(threshold=-1.0, fast={"mode_prefix": "plan"}, slow={"mode_prefix": "create"})
    result = await Orchestrator(runtimes).run(QUESTION, config)
    assert result.meta["cascade"]["escalated"] is True
    assert runtimes["fast"].calls[0].prompt_text.endswith("<|im_start|>assistant\nplan")
    assert runtimes["slow"].calls[0].prompt_text.endswith("<|im_start|>assistant\ncreate")
    assert result.fallbacks == []


class _ScriptedGate:
    """Escalates the questions that say "hard"."""

    async def decide(self, node: Node, ctx: RunContext) -> GateDecision:
        return GateDecision(escalate="hard" in ctx.question, reason="scripted")


class _Plugins:
    @hookimpl
    def orchestrator_add_gates(self) -> list[ComponentSpec]:
        return [ComponentSpec(name="scripted", factory=lambda _c: _ScriptedGate())]

    @hookimpl
    def orchestrator_add_graphs(self) -> list[GraphSpec]:
        return [GraphSpec(name="fixed", factory=lambda _c: _Fixed(), config_model=EmptyConfig)]


class _Fixed:
    async def run(self, ctx: RunContext) -> str | None:
        node = ctx.add_node("answer", [ctx.root])
        async with ctx.running(node):
            ctx.set_answer("42", node)
        return "42"


async def test_escalates_exactly_the_inputs_its_gate_fires_on() -> None:
    questions = ["easy one", "hard one", "another easy", "very hard"]
    runtimes = _runtimes()
    orch = Orchestrator(runtimes, plugins=[_Plugins()])
    escalated = []
    for question in questions:
        result = await orch.run(question, _config("scripted"))
        escalated.append(result.meta["cascade"]["escalated"])
        assert result.answer == ("7" if "hard" in question else "8")
    assert escalated == [False, True, False, True]
    assert len(runtimes["fast"].calls) == 4 and len(runtimes["slow"].calls) == 2 * 2


async def test_a_graph_without_assistant_prefix_reports_the_mode_fallback() -> None:
    orch = Orchestrator(_runtimes(), plugins=[_Plugins()])
    config = RunConfig(
        graph="cascade",
        graph_options={"fast": {"graph": "fixed", "mode_prefix": "plan"}},
        gate="scripted",
    )
    result = await orch.run("easy", config)
    assert result.answer == "42" and result.answer_node == "r.0"
    assert result.fallbacks == [
        "cascade: graph 'fixed' cannot force a mode prefix; the fast tier ran without it"
    ]


async def test_a_budget_stop_in_the_fast_tier_ends_the_cascade() -> None:
    runtimes = _runtimes(fast_logprob=-3.0)
    config = _config(threshold=-1.0).model_copy(
        update={"budget": BudgetLimits(max_generated_tokens=5)}
    )
    result = await Orchestrator(runtimes).run(QUESTION, config)
    assert result.meta["cascade"]["reason"] == "budget: max_generated_tokens"
    assert result.meta["cascade"]["escalated"] is False
    assert result.stop_reason == "budget" and runtimes["slow"].calls == []


async def test_the_confidence_gate_needs_recorded_logprobs() -> None:
    config = _config(fast={"graph_options": {}})
    result = await Orchestrator(_runtimes()).run(QUESTION, config)
    assert result.stop_reason == "error"
    assert result.stop_detail == (
        "ConfigError: gate: node r.0 has no recorded logprobs; the fast graph must record "
        "them (search: graph.record_logprobs=true)"
    )


async def test_tier_options_are_validated_by_name() -> None:
    config = _config(fast={"graph_options": {"record_logprobs": True, "beam": 3}})
    result = await Orchestrator(_runtimes()).run(QUESTION, config)
    assert result.stop_reason == "error"
    assert result.stop_detail == "ConfigError: graph.fast.graph_options.beam: unknown field"
