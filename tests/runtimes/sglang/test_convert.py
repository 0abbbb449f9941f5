"""SGLang outputs as completions: stops, logprobs, entropy, usage, stream deltas."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from orchestrator.runtimes.sglang.convert import (
    StreamAssembler,
    approx_entropy,
    completion_from_output,
    usage_from_meta,
)
from orchestrator.runtimes.sglang.replay import Recording
from orchestrator.runtimes.sglang.tokenizer import ChatTokenizer

from orchestrator import Completion, SamplingParams, Usage


def test_logprobs_top_logprobs_and_approximate_entropy(
    recordings: dict[str, Recording], tokenizer: ChatTokenizer
) -> None:
    out = recordings["generate_ids_logprobs"].response_json
    sampling = SamplingParams(logprobs=True, top_logprobs=2, return_entropy=True)
    completion = completion_from_output(out, sampling, tokenizer.decode)
    assert completion.logprobs is not None and completion.top_logprobs is not None
    assert completion.logprobs[:2] == [-1.2367291450500488, -0.06234659627079964]
    assert completion.top_logprobs[0] == {33: -1.2367291450500488, 2068: -1.2367291450500488}
    assert len(completion.logprobs) == len(completion.token_ids) == 16
    top5 = out["meta_info"]["output_top_logprobs"][0]
    p = [math.exp(e[0]) for e in top5]
    tail = 1 - sum(p)
    expected = -sum(x * math.log(x) for x in p) - tail * math.log(tail)
    assert completion.entropies is not None
    assert completion.entropies[0] == pytest.approx(expected, rel=1e-12)
    assert completion.entropies[0] == pytest.approx(1.5480, abs=1e-4)


def test_entropy_is_a_lower_bound_of_the_true_entropy() -> None:
    # A uniform distribution over 8 tokens, of which the top 2 are known.
    top = [[math.log(1 / 8), 1, None], [math.log(1 / 8), 2, None]]
    assert approx_entropy(top) < math.log(8)
    assert approx_entropy([[0.0, 1, None]]) == 0.0


def test_a_matched_stop_token_is_dropped_from_the_ids_unless_included(
    recordings: dict[str, Recording], tokenizer: ChatTokenizer
) -> None:
    out = recordings["generate_json_schema"].response_json
    trimmed = completion_from_output(out, SamplingParams(), tokenizer.decode)
    kept = completion_from_output(out, SamplingParams(include_stop=True), tokenizer.decode)
    assert (trimmed.token_ids[-1], len(trimmed.token_ids)) == (109, 19)
    assert (kept.token_ids[-1], len(kept.token_ids)) == (2, 20)
    assert trimmed.matched_stop == kept.matched_stop == 2


def test_ids_past_a_matched_stop_string_are_dropped() -> None:
    # SGLang cut the text before "." but kept the tokens up to and including it.
    out = {
        "text": "12 + 7 = 19",
        "output_ids": [33, 34, 1232, 216, 39, 446, 216, 33, 41, 30],
        "meta_info": {"finish_reason": {"type": "stop", "matched": "."}},
    }
    texts = {(33, 34, 1232, 216, 39, 446, 216, 33, 41): "12 + 7 = 19"}

    def decode(ids: Sequence[int]) -> str:
        return texts.get(tuple(ids), "12 + 7 = 19." if len(ids) == 10 else "x" * len(ids))

    completion = completion_from_output(out, SamplingParams(stop="."), decode)
    assert completion == Completion(
        text="12 + 7 = 19",
        token_ids=[33, 34, 1232, 216, 39, 446, 216, 33, 41],
        finish_reason="stop",
        matched_stop=".",
    )


def test_abort_and_length_finishes(
    recordings: dict[str, Recording], tokenizer: ChatTokenizer
) -> None:
    aborted = completion_from_output(
        recordings["generate_aborted"].response_json, SamplingParams(), tokenizer.decode
    )
    assert (aborted.finish_reason, aborted.matched_stop, len(aborted.token_ids)) == (
        "abort",
        None,
        674,
    )
    assert aborted.logprobs is None and aborted.entropies is None


def test_usage_from_meta_info(recordings: dict[str, Recording]) -> None:
    meta = recordings["fanout_child_cached"].response_json["meta_info"]
    assert usage_from_meta(meta) == Usage(prompt_tokens=132, cached_tokens=128, generated_tokens=8)
    assert usage_from_meta({}) == Usage()


def test_stream_assembler_keeps_samples_apart(tokenizer: ChatTokenizer) -> None:
    assembler = StreamAssembler(SamplingParams(), tokenizer.decode)
    meta = {"finish_reason": None}
    first = assembler.feed({"index": 1, "text": "12", "output_ids": [33, 34], "meta_info": meta})
    other = assembler.feed({"index": 0, "text": "1", "output_ids": [33], "meta_info": meta})
    done = assembler.feed(
        {
            "index": 1,
            "text": "12 +",
            "output_ids": [33, 34, 1232],
            "meta_info": {
                "finish_reason": {"type": "length", "length": 3},
                "prompt_tokens": 18,
                "cached_tokens": 17,
                "completion_tokens": 3,
            },
        }
    )
    assert [(c.index, c.token_ids, c.text) for c in (first, other, done)] == [
        (1, [33, 34], "12"),
        (0, [33], "1"),
        (1, [1232], " +"),
    ]
    assert done.completion is not None and done.completion.text == "12 +"
    assert done.usage == Usage(prompt_tokens=18, cached_tokens=17, generated_tokens=3)
    assert assembler.finished == {1}
