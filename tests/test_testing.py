"""Tests of ``orchestrator.testing``: the scripted runtime graphs and benchmarks are tested on."""

from __future__ import annotations

import dataclasses
import random
import re
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import (
    Capability,
    CapabilityMissing,
    ChatMessage,
    Completion,
    ConfigError,
    GenerateRequest,
    GenerationChunk,
    Grammar,
    Prompt,
    RequestRejected,
    Runtime,
    RuntimeFailure,
    RuntimeUnavailable,
    SamplingParams,
    ScoreRequest,
    SegmentSpec,
    SupportsSegments,
    SupportsSequences,
    Usage,
)
from orchestrator.testing import (
    ALL_CAPABILITIES,
    Script,
    ScriptedCall,
    ScriptedOutput,
    ScriptedRuntime,
    ScriptedSequence,
    ScriptedStats,
)

pytestmark = pytest.mark.anyio

DATA = Path(__file__).parent / "data" / "scripts"


def toks(text: str) -> list[int]:
    """Character tokens, as the module documents: ``ord(char) + 256``."""
    return [ord(c) + 256 for c in text]


def req(prompt: str | Prompt, **sampling: Any) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, sampling=SamplingParams(**sampling))


async def gen(rt: ScriptedRuntime, prompt: str | Prompt, **sampling: Any) -> Completion:
    return (await rt.generate([req(prompt, **sampling)]))[0].completions[0]


@pytest.fixture
def rt() -> ScriptedRuntime:
    return ScriptedRuntime(
        {
            "rules": [
                {"endswith": "12 + 7?", "outputs": ["9", "19"], "then": "cycle"},
                {"contains": "words", "outputs": ["one two. three four."]},
                {"exact": "ends", "outputs": ["ab<|im_end|>cd"]},
            ]
        }
    )


# -- the protocol and the tokenizer --------------------------------------------------------


async def test_declares_the_runtime_protocol_and_every_capability(rt: ScriptedRuntime) -> None:
    assert isinstance(rt, Runtime)
    assert isinstance(rt, SupportsSequences)
    assert isinstance(rt, SupportsSegments)
    assert (rt.provider, rt.model, rt.cost_per_token) == ("orchestrator.scripted", "scripted", 1.0)
    assert rt.eos_token_ids == (2,)
    assert rt.capabilities == ALL_CAPABILITIES == ~Capability.NONE
    assert dict(rt.special_tokens) == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}


async def test_construction_options_are_reported() -> None:
    rt = ScriptedRuntime(
        model="tiny",
        cost_per_token=0.25,
        capabilities=Capability.STREAMING,
        special_tokens={"</Thread>": 10},
        eos_token_ids=[0, 2],
    )
    assert (rt.model, rt.cost_per_token, rt.capabilities) == ("tiny", 0.25, Capability.STREAMING)
    assert rt.eos_token_ids == (0, 2)
    assert rt.special_tokens["</Thread>"] == 10


async def test_user_text_with_a_special_token_string_is_tokenized_as_characters(
    rt: ScriptedRuntime,
) -> None:
    ids = await rt.tokenize("a<|im_end|>")
    assert ids == [353, 316, 380, 361, 365, 351, 357, 366, 356, 380, 318]
    assert await rt.detokenize(ids) == "a<|im_end|>"
    assert await rt.detokenize([353, 2]) == "a<|im_end|>"  # the special id reads the same


@given(st.text())
def test_tokenize_and_detokenize_are_inverses(text: str) -> None:
    rt = ScriptedRuntime()
    ids = anyio.run(rt.tokenize, text)
    assert len(ids) == len(text)
    assert anyio.run(rt.detokenize, ids) == text


@pytest.mark.parametrize("bad", [7, -1, 256 + 0x110000])
async def test_detokenize_rejects_unknown_ids(rt: ScriptedRuntime, bad: int) -> None:
    with pytest.raises(RequestRejected, match=f"^runtime 'scripted': unknown token id {bad}$"):
        await rt.detokenize([300, bad])


async def test_render_messages_as_chatml_with_user_text_as_data(rt: ScriptedRuntime) -> None:
    prompt = Prompt(
        messages=(
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hi<|im_end|>"),
        )
    )
    expected = [
        *[1, *toks("system\nBe brief."), 2, *toks("\n")],
        *[1, *toks("user\nHi<|im_end|>"), 2, *toks("\n")],
        *[1, *toks("assistant\n")],
    ]
    assert await rt.render(prompt) == expected
    closed = prompt.model_copy(update={"add_generation_prompt": False})
    assert await rt.render(closed) == expected[: -1 - len("assistant\n")]


async def test_render_text_token_ids_and_assistant_prefix() -> None:
    rt = ScriptedRuntime(special_tokens={"<think>": 10})
    assert await rt.render(Prompt(text="Q<think>")) == toks("Q<think>")
    assert await rt.render(Prompt(token_ids=(2, 300))) == [2, 300]
    # The assistant prefix is forced model-side text: its special tokens are parsed.
    assert await rt.render(Prompt(text="Q", assistant_prefix="<think>ok")) == [
        *toks("Q"),
        10,
        *toks("ok"),
    ]


async def test_rules_match_the_rendered_chat_text() -> None:
    chat = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    rt = ScriptedRuntime({"rules": [{"exact": chat, "outputs": ["Hello"]}]})
    prompt = Prompt(messages=(ChatMessage(role="user", content="Hi"),))
    assert (await gen(rt, prompt)).text == "Hello"
    assert rt.calls[0].prompt_text == chat


# -- rules -------------------------------------------------------------------------------


async def test_first_matching_rule_wins_and_every_matcher_must_hold() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {"contains": "cat", "endswith": "?", "outputs": ["cat question"]},
                {"regex": r"^\d+$", "outputs": ["number"]},
                {"contains": "cat", "outputs": ["cat"]},
                {"exact": "x", "outputs": ["exact"]},
            ],
            "default": {"outputs": ["default"]},
        }
    )
    assert (await gen(rt, "a cat?")).text == "cat question"
    assert (await gen(rt, "a cat.")).text == "cat"
    assert (await gen(rt, "123")).text == "number"
    assert (await gen(rt, "x")).text == "exact"
    assert (await gen(rt, "dog")).text == "default"
    result = await rt.generate([req("a cat."), req("dog")])
    assert [r.meta for r in result] == [{"script_rule": "rules[2]"}, {"script_rule": "default"}]


async def test_unmatched_prompt_is_rejected_naming_it(rt: ScriptedRuntime) -> None:
    with pytest.raises(
        RequestRejected,
        match=re.escape(
            "runtime 'scripted': no script rule matches the prompt 'What?' "
            "(and there is no default rule or responder)"
        ),
    ) as info:
        await gen(rt, "What?")
    assert info.value.request == req("What?")
    assert rt.calls == [ScriptedCall("generate", "What?", SamplingParams())]


async def test_unmatched_long_prompt_is_shortened_keeping_both_ends(rt: ScriptedRuntime) -> None:
    with pytest.raises(RequestRejected, match=re.escape(f"prompt '{'a' * 38}...{'b' * 38}' (and")):
        await gen(rt, "a" * 50 + "b" * 50)


async def test_outputs_in_turn_cycle(rt: ScriptedRuntime) -> None:
    texts = [(await gen(rt, "What is 12 + 7?")).text for _ in range(3)]
    assert texts == ["9", "19", "9"]


async def test_outputs_in_turn_repeat_last_and_error() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {"exact": "r", "outputs": ["a", "b"]},
                {"exact": "e", "outputs": ["a", "b"], "then": "error"},
            ]
        }
    )
    assert [(await gen(rt, "r")).text for _ in range(3)] == ["a", "b", "b"]
    assert [c.text for c in (await rt.generate([req("e", n=2)]))[0].completions] == ["a", "b"]
    with pytest.raises(
        RequestRejected,
        match=re.escape(
            "runtime 'scripted': script rules[1] has no output #2 (2 scripted, then='error')"
        ),
    ):
        await gen(rt, "e")


async def test_each_sample_takes_a_turn_or_its_index() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {"exact": "turn", "outputs": ["a", "b", "c", "d"]},
                {"exact": "sample", "outputs": ["a", "b"], "pick": "sample"},
            ]
        }
    )

    async def texts(prompt: str, n: int) -> list[str]:
        return [c.text for c in (await rt.generate([req(prompt, n=n)]))[0].completions]

    assert await texts("turn", 2) == ["a", "b"]
    assert await texts("turn", 3) == ["c", "d", "d"]
    assert await texts("sample", 3) == ["a", "b", "b"]
    assert await texts("sample", 1) == ["a"]


async def test_seed_picks_reproducibly_by_the_documented_formula() -> None:
    rt = ScriptedRuntime({"rules": [{"exact": "q", "outputs": ["x", "y", "z"], "pick": "seed"}]})

    async def texts(**sampling: Any) -> list[str]:
        return [c.text for c in (await rt.generate([req("q", **sampling)]))[0].completions]

    documented = [random.Random(7 * 1_000_003 + i).randrange(3) for i in range(4)]
    assert documented == [0, 0, 2, 2]
    assert await texts(n=4, seed=7) == ["x", "x", "z", "z"]
    assert await texts(n=4, seed=7) == ["x", "x", "z", "z"]
    assert await texts(n=4, seed=8) == ["y", "x", "x", "x"]
    # Unseeded: the seed is the number of samples answered before (here 12, then 14).
    assert await texts(n=2) == [
        ["x", "y", "z"][random.Random(12 * 1_000_003 + i).randrange(3)] for i in range(2)
    ]
    assert await texts(n=2) == [
        ["x", "y", "z"][random.Random(14 * 1_000_003 + i).randrange(3)] for i in range(2)
    ]


# -- decoding ----------------------------------------------------------------------------


async def test_script_end_is_an_eos_that_counts_as_a_generated_token(rt: ScriptedRuntime) -> None:
    result = (await rt.generate([req("words", max_new_tokens=100)]))[0]
    assert result.completions[0] == Completion(
        text="one two. three four.",
        token_ids=toks("one two. three four."),
        finish_reason="stop",
        matched_stop=2,
    )
    assert result.usage == Usage(prompt_tokens=5, cached_tokens=0, generated_tokens=21)


async def test_max_new_tokens_truncates_with_length(rt: ScriptedRuntime) -> None:
    assert await gen(rt, "words", max_new_tokens=3) == Completion(
        text="one", token_ids=toks("one"), finish_reason="length"
    )
    # 20 characters fill the budget before the EOS: still "length".
    assert (await gen(rt, "words", max_new_tokens=20)).finish_reason == "length"
    assert (await gen(rt, "words", max_new_tokens=0)).token_ids == []


async def test_stop_strings_cut_at_the_first_completed_match(rt: ScriptedRuntime) -> None:
    result = (await rt.generate([req("words", stop=["four", "."])]))[0]
    assert result.completions[0] == Completion(
        text="one two", token_ids=toks("one two"), finish_reason="stop", matched_stop="."
    )
    assert result.usage.generated_tokens == 8  # the trimmed "." was generated
    kept = await gen(rt, "words", stop=["two."], include_stop=True)
    assert (kept.text, kept.token_ids, kept.matched_stop) == ("one two.", toks("one two."), "two.")
    # Same completing token: the earlier-starting match wins.
    assert (await gen(rt, "words", stop=[".", "two."])).matched_stop == "two."


async def test_stop_token_ids_and_include_stop(rt: ScriptedRuntime) -> None:
    space = ord(" ") + 256
    assert await gen(rt, "words", stop_token_ids=[space]) == Completion(
        text="one", token_ids=toks("one"), finish_reason="stop", matched_stop=space
    )
    kept = await gen(rt, "words", stop_token_ids=[space], include_stop=True)
    assert (kept.text, kept.token_ids) == ("one ", toks("one "))


async def test_a_stop_string_completed_by_a_stop_token_goes_to_the_token(
    rt: ScriptedRuntime,
) -> None:
    e = ord("e") + 256
    completion = await gen(rt, "words", stop=["ne"], stop_token_ids=[e])
    assert (completion.text, completion.matched_stop) == ("on", e)


async def test_scripted_eos_stops_unless_ignored(rt: ScriptedRuntime) -> None:
    assert await gen(rt, "ends") == Completion(
        text="ab", token_ids=toks("ab"), finish_reason="stop", matched_stop=2
    )
    # EOS is kept only when asked for as a stop token.
    assert (await gen(rt, "ends", include_stop=True)).token_ids == toks("ab")
    kept = await gen(rt, "ends", stop_token_ids=[2], include_stop=True)
    assert (kept.text, kept.token_ids) == ("ab<|im_end|>", [*toks("ab"), 2])
    ignored = await gen(rt, "ends", ignore_eos=True, max_new_tokens=8)
    assert ignored == Completion(
        text="ab<|im_end|>cd<|im_end|><|im_end|><|im_end|>",
        token_ids=[*toks("ab"), 2, *toks("cd"), 2, 2, 2],
        finish_reason="length",
    )


async def test_scripted_logprobs_entropy_and_top_logprobs() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {
                    "exact": "q",
                    "outputs": [
                        {
                            "text": "no",
                            "logprobs": [-0.5, -0.25],
                            "entropy": [1.5, 0.5],
                            "top_logprobs": [{"n": -0.5, "y": -1.0, "m": -3.0}, {"o": -0.25}],
                        }
                    ],
                },
                {"exact": "first", "outputs": [{"text": "ab", "entropy": 2.0}]},
            ]
        },
        default_logprob=-2.0,
    )
    full = await gen(
        rt,
        "q",
        logprobs=True,
        top_logprobs=2,
        return_entropy=True,
        stop_token_ids=[2],
        include_stop=True,
    )
    n, y, o = ord("n") + 256, ord("y") + 256, ord("o") + 256
    assert full.logprobs == [-0.5, -0.25, -2.0]
    assert full.top_logprobs == [{n: -0.5, y: -1.0}, {o: -0.25}, {2: -2.0}]
    assert full.entropies == [1.5, 0.5, 0.0]
    bare = await gen(rt, "q")
    assert (bare.logprobs, bare.top_logprobs, bare.entropies) == (None, None, None)
    first = await gen(rt, "first", return_entropy=True, logprobs=True)
    assert (first.entropies, first.logprobs) == ([2.0, 0.0], [-2.0, -2.0])


async def test_n_samples_usage_counts_the_prompt_once(rt: ScriptedRuntime) -> None:
    result = (await rt.generate([req("What is 12 + 7?", n=3)]))[0]
    assert [c.text for c in result.completions] == ["9", "19", "9"]
    assert result.usage == Usage(prompt_tokens=15, cached_tokens=0, generated_tokens=7)


async def test_grammar_is_accepted_and_recorded() -> None:
    rt = ScriptedRuntime({"rules": [{"exact": "q", "outputs": ["7"]}]})
    grammar = Grammar(regex=r"\d")
    assert (await gen(rt, "q", grammar=grammar)).text == "7"
    assert rt.calls[0].sampling is not None and rt.calls[0].sampling.grammar == grammar


# -- prefix cache ------------------------------------------------------------------------


async def test_cached_tokens_follow_the_longest_prefix_seen() -> None:
    rt = ScriptedRuntime({"default": {"outputs": ["A"]}})

    async def cached(prompt: str) -> int:
        return (await rt.generate([req(prompt)]))[0].usage.cached_tokens

    assert await cached("Question: x") == 0
    assert await cached("Question: x") == 10  # all but the last token, which must be computed
    assert await cached("Question: y") == 10
    assert await cached("Quiet") == 2
    assert await cached("Question: xA and more") == 12  # prompt + completion were kept
    assert rt.stats.num_prompt_tokens == 11 * 3 + 5 + 21
    assert rt.stats.num_cached_tokens == 10 + 10 + 2 + 12
    assert rt.stats.num_prefill_tokens == 11 * 3 + 5 + 21 - 34


async def test_without_prefix_sharing_nothing_is_cached() -> None:
    rt = ScriptedRuntime(
        {"default": {"outputs": ["A"]}}, capabilities=ALL_CAPABILITIES & ~Capability.PREFIX_SHARING
    )
    await gen(rt, "same prompt")
    assert (await rt.generate([req("same prompt")]))[0].usage.cached_tokens == 0


# -- responder ---------------------------------------------------------------------------


async def test_responder_answers_unmatched_prompts_per_sample() -> None:
    seen: list[tuple[str, int, int]] = []

    def respond(text: str, sampling: SamplingParams, index: int) -> str | ScriptedOutput:
        seen.append((text, sampling.n, index))
        if index == 0:
            return f"echo {text}"
        return ScriptedOutput(text="second", logprobs=(-0.1,) * 6)

    rt = ScriptedRuntime({"rules": [{"exact": "ruled", "outputs": ["r"]}]}, responder=respond)
    result = (await rt.generate([req("hi", n=2, logprobs=True)]))[0]
    assert [(c.text, c.logprobs) for c in result.completions] == [
        ("echo hi", [-1.0] * 7),
        ("second", [-0.1] * 6),
    ]
    assert result.meta == {"script_rule": "responder"}
    assert (await gen(rt, "ruled")).text == "r"
    assert seen == [("hi", 2, 0), ("hi", 2, 1)]


async def test_empty_responder_is_the_cheap_benchmark_path() -> None:
    rt = ScriptedRuntime(responder=lambda text, sampling, index: "")
    result = (await rt.generate([req("x")]))[0]
    assert result.completions[0] == Completion(
        text="", token_ids=[], finish_reason="stop", matched_stop=2
    )
    assert result.usage == Usage(prompt_tokens=1, cached_tokens=0, generated_tokens=1)


async def test_responder_and_default_conflict() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^responder: a default rule and a responder both answer unmatched prompts; "
        r"give one$",
    ):
        ScriptedRuntime({"default": {"outputs": ["d"]}}, responder=lambda t, s, i: "")


# -- score -------------------------------------------------------------------------------


async def test_score_uses_scripted_values_or_the_default_per_token() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {"contains": "right", "outputs": ["gen only"]},
                {"contains": "right", "scores": {"yes": -0.75, "no": [-0.1, -0.2]}},
            ]
        },
        default_logprob=-0.5,
    )
    [result, unmatched] = await rt.score(
        [
            ScoreRequest(prompt="Is it right?", continuations=("yes", "no", "maybe")),
            ScoreRequest(prompt="Other", continuations=((ord("o") + 256, 2),)),
        ]
    )
    assert result.logprobs == [-0.75, -0.1 + -0.2, -2.5]
    assert result.token_logprobs == [[-0.25] * 3, [-0.1, -0.2], [-0.5] * 5]
    assert result.usage == Usage(prompt_tokens=12 + 3 + 2 + 5, cached_tokens=0)
    assert (unmatched.logprobs, unmatched.token_logprobs) == ([-1.0], [[-0.5, -0.5]])
    assert [c.kind for c in rt.calls] == ["score", "score"]


async def test_score_token_id_continuations_are_looked_up_by_text() -> None:
    rt = ScriptedRuntime({"rules": [{"exact": "p", "scores": {"a<|im_end|>": -4.0}}]})
    [result] = await rt.score([ScoreRequest(prompt="p", continuations=((ord("a") + 256, 2),))])
    assert result.token_logprobs == [[-2.0, -2.0]]


# -- stream ------------------------------------------------------------------------------


async def test_stream_yields_one_chunk_per_token_then_the_completion(rt: ScriptedRuntime) -> None:
    chunks = [c async for c in rt.stream(req("What is 12 + 7?"))]
    completion = Completion(text="9", token_ids=toks("9"), finish_reason="stop", matched_stop=2)
    usage = Usage(prompt_tokens=15, cached_tokens=0, generated_tokens=2)
    assert chunks == [
        GenerationChunk(token_ids=toks("9"), text="9", completion=completion, usage=usage)
    ]
    words = [c async for c in rt.stream(req("words", max_new_tokens=3))]
    assert [(c.token_ids, c.text, c.completion is None) for c in words] == [
        (toks("o"), "o", True),
        (toks("n"), "n", True),
        (toks("e"), "e", False),
    ]
    assert rt.stats.num_generated_tokens == 5


async def test_stream_chunking_samples_and_trimmed_text() -> None:
    rt = ScriptedRuntime(
        {"rules": [{"exact": "q", "outputs": ["abcde", "xy"], "pick": "sample"}]},
        stream_chunk_tokens=2,
    )
    chunks = [c async for c in rt.stream(req("q", n=2, stop=["d"]))]
    assert [(c.index, c.text, c.completion is not None) for c in chunks] == [
        (0, "ab", False),
        (0, "c", True),
        (1, "xy", True),
    ]
    assert chunks[1].usage == Usage(prompt_tokens=1, cached_tokens=0, generated_tokens=7)


async def test_without_streaming_each_sample_is_one_chunk() -> None:
    rt = ScriptedRuntime(
        {"default": {"outputs": ["hello"]}}, capabilities=ALL_CAPABILITIES & ~Capability.STREAMING
    )
    chunks = [c async for c in rt.stream(req("q"))]
    assert [(c.token_ids, c.text) for c in chunks] == [(toks("hello"), "hello")]


async def test_closing_a_stream_early_is_an_abort(rt: ScriptedRuntime) -> None:
    received = []
    async with aclosing(rt.stream(req("words"))) as stream:
        async for chunk in stream:
            received.append(chunk.text)
            if len(received) == 3:
                break
    assert received == ["o", "n", "e"]
    assert rt.aborted == [ScriptedCall("stream", "words", SamplingParams())]
    assert (rt.stats.num_aborts, rt.stats.num_generated_tokens) == (1, 3)


async def test_cancelled_stream_keeps_partial_output_and_records_an_abort() -> None:
    rt = ScriptedRuntime({"default": {"outputs": ["abcdef"], "token_delay": 0.001}})
    received = []
    with anyio.CancelScope() as scope:
        async with aclosing(rt.stream(req("q"))) as stream:
            async for chunk in stream:
                received.append(chunk.text)
                if len(received) == 2:
                    scope.cancel()
    assert scope.cancelled_caught
    assert received == ["a", "b"]
    assert (rt.stats.num_aborts, rt.stats.num_generated_tokens) == (1, 2)


# -- faults ------------------------------------------------------------------------------


async def test_delay_is_cancellable_and_counts_an_abort() -> None:
    rt = ScriptedRuntime({"default": {"outputs": ["late"], "delay": 60.0}})
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.01):
            await rt.generate([req("q")])
    assert time.monotonic() - start < 5.0
    assert rt.aborted == [ScriptedCall("generate", "q", SamplingParams())]
    assert (rt.stats.num_aborts, rt.stats.num_generated_tokens) == (1, 0)


async def test_stream_delay_before_the_first_token_is_cancellable() -> None:
    rt = ScriptedRuntime({"default": {"outputs": ["late"], "delay": 60.0}})
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.01):
            async with aclosing(rt.stream(req("q"))) as stream:
                async for _ in stream:
                    pass
    assert rt.stats.num_aborts == 1


async def test_delays_are_awaited(rt: ScriptedRuntime) -> None:
    slow = ScriptedRuntime({"default": {"outputs": ["ab"], "delay": 0.02, "token_delay": 0.01}})
    start = time.monotonic()
    await slow.generate([req("q")])
    # "ab" and the EOS: 3 tokens. The margin is the event loop's clock resolution.
    assert time.monotonic() - start >= 0.02 + 0.01 * 3 - 0.001


async def test_raise_error_fails_the_call_with_the_chosen_class() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {
                    "exact": "down",
                    "raise_error": "server fell over",
                    "raise_as": "RuntimeUnavailable",
                },
                {"exact": "flaky", "outputs": [{"raise_error": "first try fails"}, "ok"]},
                {"exact": "ok", "outputs": ["fine"]},
            ]
        }
    )
    with pytest.raises(RuntimeUnavailable, match=r"^runtime 'scripted': server fell over$"):
        await gen(rt, "down")
    with pytest.raises(RuntimeFailure, match=r"^runtime 'scripted': first try fails$") as info:
        await rt.generate([req("ok"), req("flaky")])
    assert type(info.value) is RuntimeFailure
    assert info.value.request == req("flaky")
    assert (await gen(rt, "flaky")).text == "ok"
    assert rt.stats.num_errors == 2
    assert rt.stats.num_generated_tokens == 3  # only the last call produced tokens


async def test_stream_and_score_faults() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {"exact": "s", "raise_error": "no stream", "raise_as": "RequestRejected"},
                {"exact": "p", "scores": {"a": -1.0}, "raise_error": "no score"},
            ]
        }
    )
    with pytest.raises(RequestRejected, match=r"^runtime 'scripted': no stream$"):
        [c async for c in rt.stream(req("s"))]
    with pytest.raises(RuntimeFailure, match=r"^runtime 'scripted': no score$"):
        await rt.score([ScoreRequest(prompt="p", continuations=("a",))])
    assert (rt.stats.num_errors, rt.stats.num_aborts) == (2, 0)


# -- sequences ---------------------------------------------------------------------------


@pytest.fixture
def seq_rt() -> ScriptedRuntime:
    return ScriptedRuntime(
        {
            "rules": [
                {"endswith": "Q:", "outputs": [" A."]},
                {"endswith": " More:", "outputs": [" B."]},
            ],
            "default": {"outputs": ["!"]},
        }
    )


async def test_sequence_generate_appends_without_reprefill(seq_rt: ScriptedRuntime) -> None:
    handle = await seq_rt.open_sequence("Q:")
    assert isinstance(handle, ScriptedSequence)
    assert handle.token_ids == toks("Q:")
    first = await handle.generate(SamplingParams())
    assert (first.text, handle.token_ids) == (" A.", toks("Q: A."))
    await handle.extend(toks(" More:"))
    second = await handle.generate(SamplingParams())
    assert second.text == " B."
    assert handle.token_ids == toks("Q: A. More: B.")
    assert seq_rt.calls == [
        ScriptedCall("open", "Q:", None),
        ScriptedCall("sequence", "Q:", SamplingParams()),
        ScriptedCall("sequence", "Q: A. More:", SamplingParams()),
    ]
    assert seq_rt.stats == ScriptedStats(
        num_calls=3,
        num_prompt_tokens=2 + 2 + 11,
        num_cached_tokens=2 + 11,
        num_prefill_tokens=2 + 6,  # the open and the extension, nothing twice
        num_generated_tokens=4 + 4,
        num_handles_opened=1,
        num_live_handles=1,
    )
    await handle.release()
    await handle.release()
    assert seq_rt.stats.num_live_handles == 0


async def test_open_sequence_reuses_the_prefix_cache(seq_rt: ScriptedRuntime) -> None:
    await seq_rt.generate([req("Q: long shared prefix")])
    handle = await seq_rt.open_sequence(Prompt(text="Q: long shared prefix, then"))
    assert seq_rt.stats.num_cached_tokens == 21
    assert seq_rt.stats.num_prefill_tokens == 21 + 6
    await handle.release()


async def test_fork_shares_the_prefix(seq_rt: ScriptedRuntime) -> None:
    root = await seq_rt.open_sequence("Q:")
    before = dataclasses.replace(seq_rt.stats)
    children = await root.fork(2)
    assert [c.token_ids for c in children] == [toks("Q:"), toks("Q:")]
    outputs = [await c.generate(SamplingParams()) for c in children]
    assert [o.text for o in outputs] == [" A.", " A."]
    assert root.token_ids == toks("Q:")  # children grow on their own
    assert seq_rt.stats.num_forks == 1
    assert seq_rt.stats.num_handles_opened == 3
    assert seq_rt.stats.num_prefill_tokens == before.num_prefill_tokens
    for handle in [root, *children]:
        await handle.release()
    assert seq_rt.stats.num_live_handles == 0


async def test_drop_range_reencodes_only_what_follows(seq_rt: ScriptedRuntime) -> None:
    handle = await seq_rt.open_sequence("Q:abcdef")
    await handle.drop_range(2, 5)
    assert handle.token_ids == toks("Q:def")
    assert (seq_rt.stats.num_drops, seq_rt.stats.num_reencoded_tokens) == (1, 3)
    with pytest.raises(
        RequestRejected,
        match=re.escape(
            "runtime 'scripted': drop_range(4, 9) lies outside the sequence's 5 tokens"
        ),
    ):
        await handle.drop_range(4, 9)


async def test_released_handles_refuse_work(seq_rt: ScriptedRuntime) -> None:
    handle = await seq_rt.open_sequence("Q:")
    await handle.release()
    with pytest.raises(RequestRejected, match=r"^runtime 'scripted': the sequence was released$"):
        await handle.generate(SamplingParams())


async def test_sequence_generate_takes_one_sample(seq_rt: ScriptedRuntime) -> None:
    handle = await seq_rt.open_sequence("Q:")
    with pytest.raises(
        RequestRejected, match=re.escape("a sequence generates one sample at a time (n=2)")
    ):
        await handle.generate(SamplingParams(n=2))


async def test_extend_rejects_unknown_ids(seq_rt: ScriptedRuntime) -> None:
    handle = await seq_rt.open_sequence("Q:")
    with pytest.raises(RequestRejected, match=r"unknown token id 9$"):
        await handle.extend([300, 9])
    assert handle.token_ids == toks("Q:")


async def test_view_reads_growing_segments(seq_rt: ScriptedRuntime) -> None:
    a = await seq_rt.open_sequence("Q:")
    b = await seq_rt.open_sequence("xyz")
    view = await seq_rt.view(
        [SegmentSpec(handle=a, position_offset=0), SegmentSpec(handle=b, start=1, end=2)]
    )
    assert view.token_ids == toks("Q:y")
    await a.generate(SamplingParams())
    assert view.token_ids == toks("Q: A.y")
    await view.extend(toks(" More:"))
    own = await view.generate(SamplingParams(stop=["."]))
    assert own.text == " B"
    assert view.token_ids == toks("Q: A.y More: B")
    await view.drop_range(7, 12)
    assert view.token_ids == toks("Q: A.y  B")
    with pytest.raises(
        RequestRejected,
        match=re.escape(
            "drop_range(5, 8) reaches into the view's segments (its first 6 tokens); "
            "drop on their source handles instead"
        ),
    ):
        await view.drop_range(5, 8)
    [copy] = await view.fork(1)
    assert copy.token_ids == toks("Q: A.y  B")
    assert (seq_rt.stats.num_views, seq_rt.stats.num_live_handles) == (1, 4)
    assert seq_rt.stats.num_prefill_tokens == 2 + 3 + 6


async def test_view_validates_segments(seq_rt: ScriptedRuntime) -> None:
    a = await seq_rt.open_sequence("Q:")
    other = await ScriptedRuntime().open_sequence("Q:")
    with pytest.raises(
        RequestRejected, match=re.escape("segment 0: the handle is not a sequence of this runtime")
    ):
        await seq_rt.view([SegmentSpec(handle=other)])
    with pytest.raises(
        RequestRejected,
        match=re.escape("segment 1: tokens [1, 3) lie outside the handle's 2 tokens"),
    ):
        await seq_rt.view([SegmentSpec(handle=a), SegmentSpec(handle=a, start=1, end=3)])
    await a.release()
    with pytest.raises(RequestRejected, match=re.escape("segment 0: the handle was released")):
        await seq_rt.view([SegmentSpec(handle=a)])


async def test_views_read_each_others_own_tokens_after_relink(seq_rt: ScriptedRuntime) -> None:
    # Hogwild! workers: each view reads the other's own tokens, not its segments (issue 5).
    common = await seq_rt.open_sequence("Q:")
    a = await seq_rt.view([SegmentSpec(handle=common)])
    b = await seq_rt.view([SegmentSpec(handle=common), SegmentSpec(handle=a)])
    await a.relink([SegmentSpec(handle=common), SegmentSpec(handle=b)])
    await a.extend(toks("a"))
    await b.extend(toks("b"))
    assert a.token_ids == toks("Q:ba")
    assert b.token_ids == toks("Q:ab")
    assert (seq_rt.stats.num_views, seq_rt.stats.num_relinks) == (2, 1)
    with pytest.raises(RequestRejected, match=re.escape("relink needs a view")):
        await common.relink([])
    with pytest.raises(
        RequestRejected,
        match=re.escape("segment 0: tokens [0, 2) lie outside the handle's 1 tokens"),
    ):
        await a.relink([SegmentSpec(handle=b, end=2)])


async def test_aclose_releases_every_handle_and_refuses_later_calls(
    seq_rt: ScriptedRuntime,
) -> None:
    handle = await seq_rt.open_sequence("Q:")
    await handle.fork(2)
    await seq_rt.aclose()
    await seq_rt.aclose()
    assert seq_rt.stats.num_live_handles == 0
    assert handle.released
    with pytest.raises(RuntimeUnavailable, match=r"^runtime 'scripted': the runtime is closed$"):
        await gen(seq_rt, "Q:")


# -- capabilities --------------------------------------------------------------------------


async def test_operations_whose_capability_is_off_raise_capability_missing() -> None:
    none = ScriptedRuntime({"default": {"outputs": ["x"]}}, capabilities=Capability.NONE)
    message = "^runtime 'scripted': does not support {}$"
    with pytest.raises(CapabilityMissing, match=message.format("SEQUENCE_HANDLES")):
        await none.open_sequence("q")
    with pytest.raises(CapabilityMissing, match=message.format("SHARED_SEGMENTS")):
        await none.view([])
    with pytest.raises(CapabilityMissing, match=message.format("GRAMMAR")):
        await gen(none, "q", grammar=Grammar(regex="x"))
    handles_only = ScriptedRuntime(capabilities=Capability.SEQUENCE_HANDLES)
    handle = await handles_only.open_sequence("q")
    with pytest.raises(CapabilityMissing, match=message.format("TOKEN_INJECTION")) as info:
        await handle.extend([300])
    assert info.value.capability == "TOKEN_INJECTION"
    with pytest.raises(CapabilityMissing, match=message.format("KV_RANGE_DROP")):
        await handle.drop_range(0, 1)


# -- the script format ---------------------------------------------------------------------


async def test_script_loads_from_a_json_file() -> None:
    script = Script.from_file(DATA / "arithmetic.json")
    rt = ScriptedRuntime(script)
    assert (await gen(rt, "What is 12 + 7?")).text == "9"
    assert (await gen(rt, "What is 12 + 7?")).text == "19"
    [scored] = await rt.score([ScoreRequest(prompt="Is 19 right?", continuations=("yes", "no"))])
    assert scored.logprobs == [-0.25, -3.0]
    assert (await gen(rt, "anything else")).text == ""


def test_invalid_script_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"rules": [{"outputs": ["x"]}]}', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"script: {path}: 1 validation error")) as info:
        Script.from_file(path)
    assert "a rule needs at least one of exact, endswith, contains, regex" in str(info.value)


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ({"rules": [{"regex": "("}]}, "invalid regex '\\('"),
        ({"rules": [{"exact": "x", "then": "loop"}]}, "then\n  Input should be 'repeat_last'"),
        ({"rules": [{"exact": "x", "delay": -1}]}, "delay\n  Input should be greater than"),
        ({"rulez": []}, "rulez\n  Extra inputs are not permitted"),
    ],
)
def test_invalid_scripts_are_config_errors(script: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^script: (.|\n)*{message}"):
        ScriptedRuntime(script)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            {"text": "no", "logprobs": [-1.0]},
            "rules[0].outputs[0].logprobs: 1 values for the 2 tokens of 'no'",
        ),
        (
            {"text": "no", "entropy": [1.0]},
            "rules[0].outputs[0].entropy: 1 values for the 2 tokens of 'no'",
        ),
        (
            {"text": "n", "top_logprobs": [{"ab": -1.0}]},
            "rules[0].outputs[0].top_logprobs: 'ab' is not one token",
        ),
    ],
)
def test_per_token_values_must_fit_the_tokens(output: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        ScriptedRuntime({"rules": [{"exact": "x", "outputs": [output]}]})


def test_per_token_scores_must_fit_the_tokens() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("default.scores: 1 values for the 2 tokens of 'ab'")
    ):
        ScriptedRuntime({"default": {"scores": {"ab": [-1.0]}}})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"special_tokens": {"<x>": 300}},
            "special_tokens: '<x>' has id 300; special ids are 0-255",
        ),
        ({"special_tokens": {"<x>": 2}}, "special_tokens: '<|im_end|>' and '<x>' share id 2"),
        ({"special_tokens": {"": 9}}, "special_tokens: a special token needs a non-empty string"),
        ({"eos_token_ids": [9]}, "eos_token_ids: must be special token ids, got [9]"),
        ({"eos_token_ids": []}, "eos_token_ids: must be special token ids, got []"),
        ({"stream_chunk_tokens": 0}, "stream_chunk_tokens: must be >= 1, got 0"),
        ({"cost_per_token": -1.0}, "cost_per_token: must be >= 0, got -1.0"),
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        ScriptedRuntime(**options)


async def test_custom_special_tokens_stop_generation() -> None:
    rt = ScriptedRuntime(
        {"rules": [{"exact": "q", "outputs": ["<Thread>a</Thread>b"]}]},
        special_tokens={"<Thread>": 10, "</Thread>": 11},
    )
    completion = await gen(rt, "q", stop_token_ids=[11])
    assert completion == Completion(
        text="<Thread>a", token_ids=[10, *toks("a")], finish_reason="stop", matched_stop=11
    )
    assert (await gen(rt, "q", stop=["</Thread>"])).text == "<Thread>a"


async def test_calls_are_recorded_in_order(rt: ScriptedRuntime) -> None:
    await rt.generate([req("words", n=2), req("ends")])
    async with aclosing(rt.stream(req("words"))) as stream:
        async for _ in stream:
            pass
    await rt.score([ScoreRequest(prompt="s", continuations=("a",))])
    assert [(c.kind, c.prompt_text) for c in rt.calls] == [
        ("generate", "words"),
        ("generate", "ends"),
        ("stream", "words"),
        ("score", "s"),
    ]
    assert rt.calls[0].sampling == SamplingParams(n=2)
