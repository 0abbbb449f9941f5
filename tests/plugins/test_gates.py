"""Escalation gates decide exactly from the answer node's path and siblings."""

from __future__ import annotations

import pytest
from orchestrator.plugins.gates.escalation import (
    ConfidenceGate,
    ConfidenceGateConfig,
    DisagreementGate,
    DisagreementGateConfig,
    JudgeGate,
    JudgeGateConfig,
    path_of,
)

from orchestrator import ConfigError, GateDecision, NodeStatus, Orchestrator, SearchAttrs

from .conftest import context


def _sample(ctx, parent, answer, *, status=NodeStatus.DONE, text="", logprob=None):  # type: ignore[no-untyped-def]
    node = ctx.add_node("search", [parent], SearchAttrs(finished=True, answer=answer), text=text)
    node.status = status
    node.token_ids = list(range(len(text)))
    if logprob is not None:
        node.scores["logprob"] = logprob
    return node


async def test_confidence_is_the_mean_or_sum_over_the_whole_path(bare: Orchestrator) -> None:
    ctx = context(bare)
    step = _sample(ctx, ctx.root, None, text="abcd", logprob=-2.0)
    leaf = _sample(ctx, step, "7", text="efghijkl", logprob=-1.0)
    assert [n.id for n in path_of(leaf, ctx)] == ["r.0", "r.0.0"]
    mean = ConfidenceGate(ConfidenceGateConfig(threshold=-0.25))
    assert await mean.decide(leaf, ctx) == GateDecision(
        escalate=False, reason="mean logprob -0.25 >= -0.25", confidence=-0.25
    )
    total = ConfidenceGate(ConfidenceGateConfig(threshold=-2.5, statistic="sum"))
    assert await total.decide(leaf, ctx) == GateDecision(
        escalate=True, reason="sum logprob -3 < -2.5", confidence=-3.0
    )


async def test_unanswered_and_unfinished_samples(bare: Orchestrator) -> None:
    ctx = context(bare)
    first = _sample(ctx, ctx.root, "7")
    _sample(ctx, ctx.root, "7.0")  # the same answer by value
    _sample(ctx, ctx.root, None)  # votes alone
    _sample(ctx, ctx.root, None)  # alone too: unanswered samples never agree
    _sample(ctx, ctx.root, "8", status=NodeStatus.FAILED)  # not a finished sample
    gate = DisagreementGate(DisagreementGateConfig(min_agreement=0.5))
    decision = await gate.decide(first, ctx)
    assert decision == GateDecision(
        escalate=False, reason="agreement 0.5 of 4 samples >= 0.5", confidence=0.5
    )


def test_judge_options_are_validated_by_name() -> None:
    with pytest.raises(ConfigError, match=r"^gate\.judge\.normalise: unknown field$"):
        JudgeGate(JudgeGateConfig(judge={"normalise": True}))
