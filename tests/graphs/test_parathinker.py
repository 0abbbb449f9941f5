"""The ``parathinker`` graph: isolated paths at one offset, a summary that reads them all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator import (
    BudgetLimits,
    Capability,
    ChatMessage,
    Orchestrator,
    PathAttrs,
    Prompt,
    RunConfig,
    SegmentSpec,
    SummaryAttrs,
)
from orchestrator.testing import ALL_CAPABILITIES, ScriptedRuntime, ScriptedSequence

QUESTION = "Add 3 and 4."
PROMPT = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
CONTROL = {"<think1>": 10, "</think1>": 11, "<think2>": 12, "</think2>": 13, "<summary>": 14}
PATH1 = " 3 + 4 = 7 "  # then writes its closer: cut there, and forced
PATH2 = " 3 + 4 = 8"  # ends with EOS; the closer is forced too
SUMMARY = "Path 1 checks out. #### 7"
SCRIPT = {
    "rules": [
        {"endswith": "<think1>", "outputs": [PATH1 + "</think1>NOT REACHED"]},
        {"endswith": "<think2>", "outputs": [PATH2]},
        {"endswith": "<summary>", "outputs": [SUMMARY]},
    ]
}


class RecordingRuntime(ScriptedRuntime):
    """Keeps the segments of every view it builds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.views: list[list[tuple[int, int | None, int | None]]] = []

    async def view(self, segments: Sequence[SegmentSpec]) -> ScriptedSequence:
        self.views.append([(s.start, s.end, s.position_offset) for s in segments])
        return await super().view(segments)


def _run_config(**options: Any) -> RunConfig:
    return RunConfig(graph="parathinker", graph_options={"num_paths": 2, **options})


async def test_the_summary_reads_every_path_without_prefilling_any() -> None:
    rt = RecordingRuntime(SCRIPT, special_tokens=CONTROL)
    result = await Orchestrator(rt).run(QUESTION, _run_config())
    graph = result.graph
    prompt_length = len(
        await rt.render(Prompt(messages=(ChatMessage(role="user", content=QUESTION),)))
    )
    n1 = 1 + len(PATH1) + 1  # opener, text, closer (one id each)
    n2 = 1 + len(PATH2) + 1
    assert [graph[p].attrs for p in ("r.0", "r.1")] == [
        PathAttrs(index=1, position_offset=prompt_length),
        PathAttrs(index=2, position_offset=prompt_length),
    ]
    assert [graph[p].text for p in ("r.0", "r.1")] == [PATH1, PATH2]
    summary = graph["r.0.0"]
    assert summary.kind == "summary" and summary.parent_ids == ("r.0", "r.1")
    assert summary.attrs == SummaryAttrs(position_offset=prompt_length + n1, reprefilled_tokens=0)
    assert summary.text == SUMMARY and result.answer == "7" and result.answer_node == "r.0.0"
    # One view: the prompt at 0, and each path from the prompt's end, both at that offset.
    assert rt.views == [
        [(0, prompt_length, 0), (prompt_length, prompt_length + n1, prompt_length),
         (prompt_length, prompt_length + n2, prompt_length)]
    ]  # fmt: skip
    # It reads both paths: the summary was generated on prompt + path 1 + path 2 + opener.
    assert rt.calls[-1].kind == "sequence"
    assert rt.calls[-1].prompt_text == (
        PROMPT + "<think1>" + PATH1 + "</think1><think2>" + PATH2 + "</think2><summary>"
    )
    # Prefilled: the prompt once, the two openers and closers, the summary opener.
    assert rt.stats.num_prefill_tokens == prompt_length + 5
    assert (rt.stats.num_forks, rt.stats.num_views, rt.stats.num_live_handles) == (2, 1, 0)
    assert result.meta["parathinker"] == {
        "join": "kv",
        "position_offset": prompt_length,
        "path_tokens": [n1, n2],
        "summary_offset": prompt_length + n1,
        "summary_prefill_tokens": 1,
        "reprefilled_tokens": 0,
    }
    assert result.fallbacks == []


async def test_the_text_join_reprefills_the_paths_the_cache_does_not_hold() -> None:
    no_segments = ALL_CAPABILITIES & ~Capability.SHARED_SEGMENTS
    rt = ScriptedRuntime(SCRIPT, special_tokens=CONTROL, capabilities=no_segments)
    result = await Orchestrator(rt).run(QUESTION, _run_config())
    n1, n2 = result.meta["parathinker"]["path_tokens"]
    assert (n1, n2) == (1 + 11 + 1, 1 + 10 + 1)
    assert result.fallbacks == [
        "parathinker: text join (no shared segments): the summary re-prefills the paths at "
        "sequential positions"
    ]
    # Path 1 (prompt + its tokens, not its forced closer) is in the prefix cache; its closer,
    # path 2 and the opener are not.
    record = result.meta["parathinker"]
    assert (record["summary_prefill_tokens"], record["reprefilled_tokens"]) == (n2 + 2, n2 + 1)
    summary = result.graph["r.0.0"]
    assert summary.attrs == SummaryAttrs(
        position_offset=record["position_offset"] + n1 + n2, reprefilled_tokens=n2 + 1
    )
    assert result.answer == "7" and rt.stats.num_forks == 0
    # Without a prefix cache every path token is prefilled again (and the prompt too).
    bare = ScriptedRuntime(SCRIPT, special_tokens=CONTROL, capabilities=Capability.NONE)
    again = await Orchestrator(bare).run(QUESTION, _run_config())
    assert again.meta["parathinker"]["reprefilled_tokens"] == n1 + n2
    assert again.meta["parathinker"]["summary_prefill_tokens"] == (
        record["position_offset"] + n1 + n2 + 1
    )


async def test_a_kv_join_on_a_runtime_without_segments_is_refused() -> None:
    rt = ScriptedRuntime(SCRIPT, special_tokens=CONTROL, capabilities=Capability.STREAMING)
    result = await Orchestrator(rt).run(QUESTION, _run_config(join="kv"))
    assert result.stop_reason == "error"
    assert result.stop_detail == (
        "CapabilityMissing: runtime 'scripted': does not support "
        "SEQUENCE_HANDLES|SHARED_SEGMENTS|TOKEN_INJECTION"
    )


async def test_a_failed_path_is_left_out_and_every_handle_is_released() -> None:
    script = {
        "rules": [{"endswith": "<think2>", "raise_error": "path 2 fell over"}, *SCRIPT["rules"]]
    }
    rt = RecordingRuntime(script, special_tokens=CONTROL)
    result = await Orchestrator(rt).run(QUESTION, _run_config())
    assert result.graph["r.1"].error == "RuntimeFailure: runtime 'scripted': path 2 fell over"
    assert result.graph["r.0.0"].parent_ids == ("r.0",)
    assert len(rt.views[0]) == 2 and result.answer == "7"
    assert rt.stats.num_live_handles == 0


async def test_a_budget_spent_on_the_paths_skips_the_summary() -> None:
    rt = ScriptedRuntime(SCRIPT, special_tokens=CONTROL)
    config = _run_config().model_copy(update={"budget": BudgetLimits(max_generated_tokens=12)})
    result = await Orchestrator(rt).run(QUESTION, config)
    assert [n.kind for n in result.graph] == ["question", "path", "path"]
    assert result.answer is None and result.stop_reason == "budget"
    assert rt.stats.num_live_handles == 0


async def test_control_text_without_special_ids_is_tokenized_as_text() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {"endswith": "Summary:", "outputs": ["#### 7"]},
                {"regex": r"Attempt \d:$", "outputs": [" 7"]},
            ]
        }
    )
    options = {"path_prefix": "\nAttempt {i}:", "path_suffix": "\n", "summary_prefix": "\nSummary:"}
    result = await Orchestrator(rt).run(QUESTION, _run_config(**options))
    assert result.answer == "7"
    assert rt.calls[-1].prompt_text == (PROMPT + "\nAttempt 1: 7\n\nAttempt 2: 7\n\nSummary:")
    assert result.meta["parathinker"]["path_tokens"] == [len("\nAttempt 1: 7\n")] * 2


async def test_record_join_keeps_what_the_summary_read_and_where() -> None:
    rt = ScriptedRuntime(SCRIPT, special_tokens=CONTROL)
    result = await Orchestrator(rt).run(QUESTION, _run_config(record_join=True))
    record = result.meta["parathinker"]["join_record"]
    offset = result.meta["parathinker"]["position_offset"]
    texts = [await rt.detokenize(s["token_ids"]) for s in record["segments"]]
    assert texts == [PROMPT, "<think1>" + PATH1 + "</think1>", "<think2>" + PATH2 + "</think2>"]
    assert [s["position_offset"] for s in record["segments"]] == [0, offset, offset]
    assert record["opener"] == [CONTROL["<summary>"]]
    assert record["summary_offset"] == result.meta["parathinker"]["summary_offset"]
    summary = record["summary"]
    assert await rt.detokenize(summary["token_ids"]) == SUMMARY
    assert summary["logprobs"] == [-1.0] * len(SUMMARY)
    assert summary["entropies"] == [0.0] * len(SUMMARY)
    assert [c.sampling.top_logprobs for c in rt.calls if c.sampling][-1] == 20
