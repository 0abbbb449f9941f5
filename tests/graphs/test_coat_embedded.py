"""CoAT end to end on SmolLM2: MCTS, associative memories grounded by BM25, V = content
+ β · memory judged by the model itself, siblings sharing their prompt's KV."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from orchestrator.runtimes.embedded import EmbeddedRuntime

from orchestrator import Orchestrator

QUESTION = "Sara has 12 pencils and gives 5 to Tom. How many pencils does she have now?"
DOCUMENTS = ["Giving pencils away leaves fewer pencils: subtract.", "Paris is in France."]


@pytest.fixture(scope="module")
def smollm2() -> Iterator[EmbeddedRuntime]:
    runtime = EmbeddedRuntime.from_pretrained(None, kv_cache_bytes=128 * 2**20)
    yield runtime
    anyio.run(runtime.aclose)


async def test_coat_on_smollm2(smollm2: EmbeddedRuntime) -> None:
    result = await Orchestrator({"smollm2": smollm2}).run(
        QUESTION,
        graph="coat",
        seed=0,
        graph_options={"max_step_tokens": 16, "temperature": 0.7},
        strategy_options={"num_children": 2, "max_iterations": 2, "exploration": 1.0},
        memory_options={
            "max_tokens": 16,
            "retriever": "lexical",
            "retriever_options": {"documents": DOCUMENTS},
            "num_documents": 1,
        },
        scorer_options={"beta": 0.5},
    )
    graph = result.graph
    search = [n for n in graph if n.kind == "search"]
    assert [n.id for n in search][:2] == ["r.0", "r.1"]  # the question expanded by K = 2
    assert result.meta["search"]["expanded"][0] == "r"
    for node in search:
        content, memory = node.scores["content"], node.scores["memory"]
        assert 0.0 <= content <= 1.0 and 0.0 <= memory <= 1.0
        assert node.score == pytest.approx(content + 0.5 * memory)
        [association] = [c for c in graph.children(node.id) if c.kind == "association"]
        assert association.attrs.documents in ([], ["doc0"], ["doc1"])
        assert association.usage.generated_tokens <= 16
    # Backpropagation: every evaluation (each new node, each revisit of a terminal one)
    # passes through the root and exactly one of its children.
    visits = len(search) + len(result.meta["search"]["revisited"])
    assert result.meta["search"]["root_visits"] == visits
    assert sum(n.attrs.visits for n in search if n.depth == 1) == visits
    # Siblings share the prompt: the second child of the question reuses every full KV block
    # of it (16 tokens a block) but the last token's.
    first, second = graph["r.0"].usage, graph["r.1"].usage
    assert first.prompt_tokens == second.prompt_tokens
    assert second.cached_tokens == (second.prompt_tokens - 1) // 16 * 16
    assert result.stop_reason == "done"
    assert smollm2.statistics().blocks_in_use == 0
