"""GlimpRouter end to end on SmolLM2 (large) and its first-8-layers variant (small)."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from orchestrator.graphs.search import DEFAULT_SYSTEM_PROMPT
from orchestrator.plugins.routers.glimp_router import glimp_steps
from orchestrator.runtimes.embedded import EmbeddedRuntime

from orchestrator import (
    ChatMessage,
    GenerateRequest,
    Orchestrator,
    Prompt,
    RunConfig,
    SamplingParams,
)

QUESTION = "Ben has 7 shells. He buys 9 more shells. How many shells does Ben have now?"


@pytest.fixture(scope="module")
def pair() -> Iterator[dict[str, EmbeddedRuntime]]:
    runtimes = {
        "large": EmbeddedRuntime.from_pretrained(None, kv_cache_bytes=128 * 2**20),
        "small": EmbeddedRuntime.from_pretrained(None, layers=8, kv_cache_bytes=128 * 2**20),
    }
    yield runtimes
    for runtime in runtimes.values():
        anyio.run(runtime.aclose)


async def test_steps_go_to_the_large_model_exactly_when_the_small_one_hesitates(
    pair: dict[str, EmbeddedRuntime],
) -> None:
    small, large = pair["small"], pair["large"]
    assert small.cost_per_token < large.cost_per_token
    tau = 1.5
    # SmolLM2 seldom leaves blank lines on its own: here a line is a step.
    config = RunConfig(
        strategy="beam",
        strategy_options={"width": 1, "expansions_per_beam": 1},
        router="glimp",
        router_options={"tau": tau, "answer_markers": ["####"], "step_delimiter": "\n"},
        graph_options={
            "temperature": 0.0,
            "max_step_tokens": 48,
            "max_solution_tokens": 160,
            "step_delimiter": "\n",
        },
        runtime="large",
    )
    result = await Orchestrator(pair).run(QUESTION, config)  # type: ignore[arg-type]
    assert result.stop_reason == "done"
    steps = glimp_steps(result.graph, result.meta)
    assert any(s.reason == "probe" for s in steps)
    base = await large.render(Prompt(messages=_messages()))
    for step in steps:
        node = result.graph[step.node_id]
        assert node.runtime == step.route
        if step.reason != "probe":
            continue
        assert step.route == (
            "large" if step.entropy is not None and step.entropy > tau else "small"
        )
        # The recorded H_init is the small model's exact first-token entropy at c_k.
        path = [n for n in result.graph.ancestors(node.id) if n.kind != "question"]
        context = base + [t for n in path for t in n.token_ids]
        probe = GenerateRequest(
            prompt=Prompt(token_ids=tuple(context)),
            sampling=SamplingParams(max_new_tokens=1, temperature=0, return_entropy=True),
        )
        (again,) = await small.generate([probe])
        assert again.completions[0].entropies is not None
        assert abs(again.completions[0].entropies[0] - (step.entropy or 0.0)) < 1e-4
    # Both runtimes reuse their prefix caches across steps.
    later = [result.graph[s.node_id] for s in steps[1:]]
    assert all(n.usage.cached_tokens > 0 for n in later)
    assert large.statistics().blocks_in_use == 0 and small.statistics().blocks_in_use == 0


def _messages() -> tuple[ChatMessage, ...]:
    return (
        ChatMessage(role="system", content=DEFAULT_SYSTEM_PROMPT),
        ChatMessage(role="user", content=QUESTION),
    )
