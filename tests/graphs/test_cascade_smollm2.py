"""The cascade end to end on SmolLM2: Dualformer-style prompted modes, the confidence gate on
the fast answer's recorded logprobs, and per-tier costs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from orchestrator.runtimes.embedded import EmbeddedRuntime

from orchestrator import Orchestrator, RunConfig

QUESTION = "Ben has 7 shells. He buys 9 more shells. How many shells does Ben have now?"


@pytest.fixture(scope="module")
def smollm2() -> Iterator[EmbeddedRuntime]:
    runtime = EmbeddedRuntime.from_pretrained(None, kv_cache_bytes=128 * 2**20)
    yield runtime
    anyio.run(runtime.aclose)


def _config(threshold: float) -> RunConfig:
    tier: dict[str, Any] = {"max_solution_tokens": 48, "temperature": 0.7}
    return RunConfig(
        graph="cascade",
        graph_options={
            "fast": {
                "strategy": "best_of_n",
                "strategy_options": {"n": 1},
                "graph_options": {**tier, "record_logprobs": True},
                "mode_prefix": "The answer is",
            },
            "slow": {
                "strategy": "self_consistency",
                "strategy_options": {"n": 2},
                "graph_options": tier,
                "mode_prefix": "Let's think step by step.",
            },
        },
        gate="confidence",
        gate_options={"threshold": threshold},
        seed=1,
    )


async def test_the_gate_decides_on_the_recorded_logprobs(smollm2: EmbeddedRuntime) -> None:
    kept = await Orchestrator(smollm2).run(QUESTION, _config(threshold=-100.0))
    escalated = await Orchestrator(smollm2).run(QUESTION, _config(threshold=1.0))
    for result in (kept, escalated):
        assert result.stop_reason == "done" and result.fallbacks == []
        fast = result.meta["cascade"]["fast"]
        (node_id,) = fast["nodes"]
        node = result.graph[node_id]
        mean = node.scores["logprob"] / len(node.token_ids)
        assert result.meta["cascade"]["confidence"] == pytest.approx(mean)
        assert fast["cost"] == pytest.approx(node.usage.generated_tokens * smollm2.cost_per_token)
    assert kept.meta["cascade"]["escalated"] is False and "slow" not in kept.meta["cascade"]
    assert kept.answer == kept.meta["cascade"]["fast"]["answer"]
    record = escalated.meta["cascade"]
    assert record["escalated"] is True and len(record["slow"]["nodes"]) == 2
    assert record["slow"]["generated_tokens"] == sum(
        escalated.graph[n].usage.generated_tokens for n in record["slow"]["nodes"]
    )
    if record["slow"]["answer"] is not None:  # the slow answer wins; else the fast one stays
        assert escalated.answer == record["slow"]["answer"]
        assert escalated.answer_node in record["slow"]["nodes"]
    else:
        assert escalated.answer == record["fast"]["answer"]
    assert smollm2.statistics().blocks_in_use == 0
