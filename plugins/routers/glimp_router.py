"""GlimpRouter: route each reasoning step by the entropy of the small model's first token.

Zeng et al., "Efficient Collaborative Inference by Glimpsing One Token of Thoughts"
(arXiv 2601.05110; no code released). Probe-then-dispatch, per reasoning step k: the small
model decodes only the first token of the step from the shared context c_k; if the entropy of
that token's distribution, H_init = -Σ_v p(v|c_k) log p(v|c_k) over the full vocabulary,
exceeds τ, the large model writes the step, else the small one does. The final answer after
thinking is written by the large model.

As a router (``--router glimp``), it plugs into any graph that generates step by step
through :meth:`RunContext.generate` with the step delimiter among the request's stop strings
(the ``search`` graph with ``beam`` at width 1 and one expansion is a single chain of steps).
Both runtimes receive the same request, so they share the context: with token-id prompts (one
tokenizer, e.g. SmolLM2 and its first-k-layers variant ``embedded:smollm2?layers=8``) each
runtime's prefix cache catches up on the other's tokens; with runtimes whose tokenizers differ,
the graph must send text prompts (``search``: ``graph.context=text``) that each runtime
re-tokenizes.

Parameters:

- ``small`` / ``large``: the runtime names (defaults ``small`` and ``large``).
- ``tau`` (τ): the entropy threshold in nats; a step whose H_init is *greater* than τ goes to
  the large model (H_init = τ stays small). The paper uses one fixed τ tuned per model pair
  (critics note on test data); its value does not transfer, so the default 1.0 is ours.
- ``step_delimiter`` (``"\\n\\n"``): a request is a reasoning step when this string is one of its
  stop strings; any other request (a whole solution, a final answer) goes to the large model.
- ``answer_markers`` (``["</think>"]``): strings that open the final answer. When one already
  occurs in the path (the texts of the node's ancestors below the question) the thinking is
  over and the step goes to the large model without a probe; when the probe's first token
  (stripped) begins a marker or begins with one, the step opens the answer and goes large too.
- ``probe_top_logprobs`` (20): on a small runtime without ``Capability.EXACT_ENTROPY`` that
  returns no entropies, H_init is estimated from this many top logprobs (the remaining mass
  counted as one outcome, a lower bound) and the fallback is reported.

Unspecified by the paper, chosen here: the probe token is discarded and the chosen runtime
writes the whole step from c_k (methods §7(a)2 reads the paper the same way; a small step thus
costs one extra decode on the small model, which with greedy decoding repeats the probe
token); the probe is greedy (the entropy is of the model's distribution, whatever the step's
temperature) and does not stop at EOS, so that an EOS first token still reports its entropy;
the probe's usage is charged to the step's node and the budget; answer detection by markers.

Records: per routed node, ``node.scores["glimp_entropy"]`` (probed steps) and ``node.runtime``;
per run, ``ctx.meta["glimp"]["steps"]``: ``{"node", "entropy", "route", "reason"}`` in routing
order. :func:`glimp_steps` joins them with the graph into :class:`GlimpStep` records with the
step's tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import (
    Capability,
    CapabilityMissing,
    Completion,
    ComponentSpec,
    GenerateRequest,
    RunGraph,
    SamplingParams,
    hookimpl,
)

if TYPE_CHECKING:
    from orchestrator import Node, RunContext

__all__ = [
    "GlimpRouter",
    "GlimpRouterConfig",
    "GlimpStep",
    "glimp_steps",
    "large_share",
    "truncated_entropy",
]

Reason = Literal["probe", "answer", "after_marker", "marker_probe"]


class GlimpRouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    small: str = "small"
    large: str = "large"
    tau: float = Field(1.0, ge=0.0)
    step_delimiter: str = Field("\n\n", min_length=1)
    answer_markers: tuple[str, ...] = ("</think>",)
    probe_top_logprobs: int = Field(20, ge=1)


class GlimpStep(NamedTuple):
    """One routed generation: its node, H_init (None when not probed), the runtime that
    wrote it, why, and the tokens it wrote."""

    node_id: str
    entropy: float | None
    route: str
    reason: str
    tokens: int


def truncated_entropy(top_logprobs: Mapping[int, float]) -> float:
    """Entropy estimated from the top-k logprobs: their terms plus the remaining mass as one
    outcome. A lower bound on the full-vocabulary entropy (exact when k covers the support)."""
    probs = [math.exp(lp) for lp in top_logprobs.values()]
    rest = max(0.0, 1.0 - sum(probs))
    return -sum(p * math.log(p) for p in (*probs, rest) if p > 0.0)


class GlimpRouter:
    """Probe-then-dispatch routing (see the module documentation)."""

    def __init__(self, config: GlimpRouterConfig) -> None:
        self.config = config

    async def route(self, request: GenerateRequest, node: Node, ctx: RunContext) -> str:
        config = self.config
        if config.step_delimiter not in request.sampling.stop:
            return self._record(ctx, node, None, config.large, "answer")
        path = "".join(n.text for n in ctx.graph.ancestors(node.id) if n.kind != "question")
        if any(marker in path for marker in config.answer_markers):
            return self._record(ctx, node, None, config.large, "after_marker")
        entropy, first = await self._probe(request, node, ctx)
        node.scores["glimp_entropy"] = entropy
        if self._opens_answer(first):
            return self._record(ctx, node, entropy, config.large, "marker_probe")
        chosen = config.large if entropy > config.tau else config.small
        return self._record(ctx, node, entropy, chosen, "probe")

    async def _probe(
        self, request: GenerateRequest, node: Node, ctx: RunContext
    ) -> tuple[float, str]:
        """H_init and the text of the small model's first token of the step."""
        name = self.config.small
        exact = Capability.EXACT_ENTROPY in ctx.runtime(name).capabilities
        sampling = SamplingParams(
            max_new_tokens=1,
            temperature=0.0,
            seed=request.sampling.seed,
            ignore_eos=True,
            return_entropy=True,
            top_logprobs=0 if exact else self.config.probe_top_logprobs,
        )
        probe = request.model_copy(update={"sampling": sampling})
        num_chars, num_ids = len(node.text), len(node.token_ids)
        try:
            result = await ctx.generate(node, probe, runtime=name)
        finally:
            # The probe is charged to the node (usage, budget, span) but its token is not
            # part of the step: the chosen runtime writes the step from c_k.
            node.text = node.text[:num_chars]
            del node.token_ids[num_ids:]
        completion = result.completions[0]
        return self._entropy(completion, exact, ctx), completion.text

    def _entropy(self, completion: Completion, exact: bool, ctx: RunContext) -> float:
        name = self.config.small
        if completion.entropies:
            if not exact:
                ctx.report_fallback(f"glimp: approximate entropy ({name} lacks EXACT_ENTROPY)")
            return completion.entropies[0]
        if completion.top_logprobs:
            ctx.report_fallback(
                f"glimp: entropy from top-{self.config.probe_top_logprobs} logprobs "
                f"({name} lacks EXACT_ENTROPY)"
            )
            return truncated_entropy(completion.top_logprobs[0])
        raise CapabilityMissing("EXACT_ENTROPY (or entropies / top logprobs)", runtime=name)

    def _opens_answer(self, first: str) -> bool:
        token = first.strip()
        return bool(token) and any(
            marker.startswith(token) or token.startswith(marker)
            for marker in self.config.answer_markers
        )

    def _record(
        self, ctx: RunContext, node: Node, entropy: float | None, route: str, reason: Reason
    ) -> str:
        config = self.config
        log = ctx.meta.setdefault(
            "glimp",
            {"tau": config.tau, "small": config.small, "large": config.large, "steps": []},
        )
        log["steps"].append({"node": node.id, "entropy": entropy, "route": route, "reason": reason})
        return route


def glimp_steps(graph: RunGraph, meta: Mapping[str, Any]) -> list[GlimpStep]:
    """The run's routed generations with the tokens each wrote (its node's token ids), from a
    run's graph and ``meta`` (``RunResult.graph`` / ``.meta``, or ``ctx.graph`` / ``.meta``).
    A node routed twice (a retried call) appears twice."""
    log = meta.get("glimp", {}).get("steps", [])
    return [
        GlimpStep(s["node"], s["entropy"], s["route"], s["reason"], len(graph[s["node"]].token_ids))
        for s in log
    ]


def large_share(steps: list[GlimpStep], large: str) -> tuple[float, float]:
    """The share of steps, and of step tokens, written by runtime ``large`` (0.0 when empty)."""
    if not steps:
        return 0.0, 0.0
    on_large = [s for s in steps if s.route == large]
    num_tokens = sum(s.tokens for s in steps)
    step_share = len(on_large) / len(steps)
    token_share = sum(s.tokens for s in on_large) / num_tokens if num_tokens else 0.0
    return step_share, token_share


@hookimpl
def orchestrator_add_routers() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="glimp",
            factory=GlimpRouter,
            config_model=GlimpRouterConfig,
            description="GlimpRouter: the large model writes the steps whose first token "
            "the small model finds uncertain (entropy > tau)",
        )
    ]
