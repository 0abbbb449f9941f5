"""Escalation gates: when a fast answer must go to the slow path (the ``cascade`` graph).

SafeLens (arXiv 2605.17610) screens every input with a fast path and sends a hard subset to
slow chain-of-thought reasoning; its escalation trigger is not published, so the gate is a
plugin. Three gates, each deciding from the fast answer's node (``decide(node, ctx)``):

- ``confidence``: low confidence from logprobs. The answer path's token logprobs, as the
  graph recorded them on its nodes (``node.scores["logprob"]``, their sum per node; the
  ``search`` graph records them with ``graph.record_logprobs=true``), summarised by
  ``statistic``: ``mean`` (per token, over the whole path: ancestors below the question and
  the node) or ``sum``. Escalates when it is below ``threshold`` (default -1.0 nats per
  token; ours).
- ``disagreement``: disagreement among samples. The samples are the answer node's siblings
  of its kind (the fast tier's candidates: ``best_of_n`` or ``self_consistency`` with
  ``n ≥ 2``) that finished; each votes for its final answer (compared by value, an unanswered
  sample is a vote of its own). Escalates when the majority's share is below
  ``min_agreement`` (default 1.0: any disagreement), or when fewer than ``min_samples``
  (default 2) samples finished.
- ``judge``: a judge model's P("Yes") that the answer path is correct, through the
  ``llm_judge`` scorer (``judge`` holds its options: runtime, template, yes/no, ...), counted
  as one scorer call. Escalates when it is below ``threshold`` (default 0.5).

``GateDecision.confidence`` carries the number compared. Unspecified by the sources, chosen
here: every threshold and default above.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.plugins.scorers.answers import answer_key
from orchestrator.plugins.scorers.llm_judge import LLMJudge, LLMJudgeConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator import (
    Candidate,
    ComponentSpec,
    ConfigError,
    GateDecision,
    NodeStatus,
    ScoreBatch,
    hookimpl,
)

if TYPE_CHECKING:
    from orchestrator import Node, RunContext

__all__ = [
    "ConfidenceGate",
    "ConfidenceGateConfig",
    "DisagreementGate",
    "DisagreementGateConfig",
    "JudgeGate",
    "JudgeGateConfig",
    "path_of",
]


def path_of(node: Node, ctx: RunContext) -> list[Node]:
    """The answer path: the node's ancestors below the question (first-parent chain), then
    the node."""
    return [*(n for n in ctx.graph.ancestors(node.id) if n.kind != "question"), node]


class ConfidenceGateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = -1.0
    statistic: Literal["mean", "sum"] = "mean"


class ConfidenceGate:
    def __init__(self, config: ConfidenceGateConfig) -> None:
        self.config = config

    async def decide(self, node: Node, ctx: RunContext) -> GateDecision:
        """:raises ConfigError: if a node of the path has no recorded logprobs."""
        path = path_of(node, ctx)
        missing = [n.id for n in path if "logprob" not in n.scores]
        if missing:
            raise ConfigError(
                f"node {missing[0]} has no recorded logprobs; the fast graph must record them "
                "(search: graph.record_logprobs=true)",
                field="gate",
            )
        total = sum(n.scores["logprob"] for n in path)
        num_tokens = sum(len(n.token_ids) for n in path)
        if self.config.statistic == "mean":
            value = total / num_tokens if num_tokens else 0.0
        else:
            value = total
        escalate = value < self.config.threshold
        reason = f"{self.config.statistic} logprob {value:.4g} " + (
            f"< {self.config.threshold:g}" if escalate else f">= {self.config.threshold:g}"
        )
        return GateDecision(escalate=escalate, reason=reason, confidence=value)


class DisagreementGateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_agreement: float = Field(1.0, ge=0.0, le=1.0)
    min_samples: int = Field(2, ge=1)


class DisagreementGate:
    def __init__(self, config: DisagreementGateConfig) -> None:
        self.config = config

    async def decide(self, node: Node, ctx: RunContext) -> GateDecision:
        siblings = ctx.graph.children(node.parent_ids[0]) if node.parent_ids else [node]
        samples = [s for s in siblings if s.kind == node.kind and s.status is NodeStatus.DONE]
        if len(samples) < self.config.min_samples:
            return GateDecision(
                escalate=True,
                reason=f"{len(samples)} finished samples < {self.config.min_samples}",
            )
        votes: Counter[str] = Counter()
        for sample in samples:
            answer = getattr(sample.attrs, "answer", None)
            # An unanswered sample agrees with nobody: a key of its own.
            votes[answer_key(answer) if answer is not None else f"\0{sample.id}"] += 1
        agreement = max(votes.values()) / len(samples)
        escalate = agreement < self.config.min_agreement
        reason = f"agreement {agreement:.4g} of {len(samples)} samples " + (
            f"< {self.config.min_agreement:g}" if escalate else f">= {self.config.min_agreement:g}"
        )
        return GateDecision(escalate=escalate, reason=reason, confidence=agreement)


class JudgeGateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, ge=0.0, le=1.0)
    judge: dict[str, Any] = Field(default_factory=dict)


class JudgeGate:
    def __init__(self, config: JudgeGateConfig) -> None:
        self.config = config
        try:
            self.judge = LLMJudge(LLMJudgeConfig.model_validate(config.judge))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            raise ConfigError(message, field=f"gate.judge.{where}") from exc

    async def decide(self, node: Node, ctx: RunContext) -> GateDecision:
        text = "".join(n.text for n in path_of(node, ctx))
        batch = ScoreBatch(
            question=ctx.question,
            candidates=[Candidate(text=text, step=node.text, node_id=node.id)],
        )
        (p_yes,) = await ctx.score(batch, node=node, scorer=self.judge, name="judge_gate")
        escalate = p_yes < self.config.threshold
        reason = f"judge P(yes) {p_yes:.4g} " + (
            f"< {self.config.threshold:g}" if escalate else f">= {self.config.threshold:g}"
        )
        return GateDecision(escalate=escalate, reason=reason, confidence=p_yes)


@hookimpl
def orchestrator_add_gates() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="confidence",
            factory=ConfidenceGate,
            config_model=ConfidenceGateConfig,
            description="escalate when the answer path's token logprobs are low",
        ),
        ComponentSpec(
            name="disagreement",
            factory=DisagreementGate,
            config_model=DisagreementGateConfig,
            description="escalate when the fast samples disagree on the final answer",
        ),
        ComponentSpec(
            name="judge",
            factory=JudgeGate,
            config_model=JudgeGateConfig,
            description='escalate when a judge model doubts the answer (P("Yes") low)',
        ),
    ]
