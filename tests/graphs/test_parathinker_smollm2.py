"""ParaThinker on the real SmolLM2 (embedded runtime): the DAG join end to end, and the
summary's distributions over shared segments against a from-scratch recompute (issue 7)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import torch
from orchestrator.runtimes.embedded import EmbeddedRuntime
from transformers import AutoModelForCausalLM

from orchestrator import Orchestrator, RunConfig

QUESTION = "Ben has 7 shells. He buys 9 more shells. How many shells does Ben have now?"
OPTIONS: dict[str, Any] = {
    "num_paths": 3,
    "path_prefix": "\nAttempt {i}:",
    "path_suffix": "\n(end of attempt {i})",
    "summary_prefix": "\nComparing the attempts, the final answer is",
    "max_path_tokens": 24,
    "max_summary_tokens": 12,
    "temperature": 0.8,
    "record_join": True,
}


@pytest.fixture(scope="module")
def smollm2() -> Iterator[EmbeddedRuntime]:
    runtime = EmbeddedRuntime.from_pretrained(None, kv_cache_bytes=128 * 2**20)
    yield runtime
    anyio.run(runtime.aclose)


def _dag_recompute(model_dir: str, record: dict[str, Any]) -> torch.Tensor:
    """Log-probabilities at each summary token, from one fp32 forward of Hugging Face's Llama
    over prompt + every path + the summary, with the DAG mask and the join's positions."""
    segments = record["segments"]
    own = record["opener"] + record["summary"]["token_ids"][:-1]
    ids: list[int] = []
    positions: list[int] = []
    group: list[int] = []  # 0: prompt, i: path i, -1: the summary's own tokens
    for i, segment in enumerate(segments):
        ids += segment["token_ids"]
        positions += [segment["position_offset"] + j for j in range(len(segment["token_ids"]))]
        group += [i] * len(segment["token_ids"])
    ids += own
    positions += [record["summary_offset"] + j for j in range(len(own))]
    group += [-1] * len(own)
    n = len(ids)
    allow = torch.zeros(n, n, dtype=torch.bool)
    for q in range(n):
        for k in range(q + 1):  # the prompt, the query's own group, or anything for the summary
            allow[q, k] = group[k] in (0, group[q]) or group[q] == -1
    mask = torch.where(allow, 0.0, float("-inf"))[None, None]
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        logits = model(
            torch.tensor([ids]), attention_mask=mask, position_ids=torch.tensor([positions])
        ).logits[0]
    first = n - len(own) + len(record["opener"]) - 1  # predicts the first summary token
    return logits[first:].log_softmax(dim=-1)


async def test_the_summary_over_shared_segments_equals_the_dag_recompute(
    smollm2: EmbeddedRuntime,
) -> None:
    config = RunConfig(graph="parathinker", graph_options=OPTIONS, seed=3)
    result = await Orchestrator(smollm2).run(QUESTION, config)
    assert result.stop_reason == "done" and result.fallbacks == []
    meta = result.meta["parathinker"]
    assert meta["join"] == "kv" and meta["reprefilled_tokens"] == 0
    assert meta["summary_prefill_tokens"] == len(meta["join_record"]["opener"])
    assert meta["summary_offset"] == meta["position_offset"] + max(meta["path_tokens"])
    summary = result.graph[result.answer_node or ""]
    assert summary.parent_ids == ("r.0", "r.1", "r.2")
    assert smollm2.statistics().blocks_in_use == 0  # every handle and the view released

    record = meta["join_record"]
    reference = _dag_recompute(str(smollm2.model_directory), record)
    got = record["summary"]
    assert len(got["token_ids"]) == reference.shape[0] > 0
    for j, token in enumerate(got["token_ids"]):
        row = reference[j]
        assert abs(row[token].item() - got["logprobs"][j]) < 1e-4
        for top_id, logprob in got["top_logprobs"][j].items():
            assert abs(row[int(top_id)].item() - logprob) < 1e-4
        entropy = -(row.exp() * row).sum().item()
        assert abs(entropy - got["entropies"][j]) < 1e-4
    # The check can fail: the same tokens at a text join's sequential positions differ.
    cursor = meta["position_offset"]
    for segment in record["segments"][1:]:
        segment["position_offset"] = cursor
        cursor += len(segment["token_ids"])
    sequential = _dag_recompute(str(smollm2.model_directory), {**record, "summary_offset": cursor})
    assert (sequential - reference).abs().max().item() > 1e-2


async def test_the_text_join_prefills_the_paths_again(smollm2: EmbeddedRuntime) -> None:
    options = {**OPTIONS, "join": "text", "max_summary_tokens": 4, "record_join": False}
    config = RunConfig(graph="parathinker", graph_options=options, seed=3)
    result = await Orchestrator(smollm2).run(QUESTION, config)
    meta = result.meta["parathinker"]
    assert meta["join"] == "text" and result.stop_reason == "done"
    assert result.fallbacks == [
        "parathinker: text join (no shared segments): the summary re-prefills the paths at "
        "sequential positions"
    ]
    # The prefix cache can hold at most the first path: the others are computed again.
    assert meta["reprefilled_tokens"] >= sum(meta["path_tokens"][1:])
    assert meta["summary_offset"] == meta["position_offset"] + sum(meta["path_tokens"])
