"""SGLangRuntime (the core protocol) against recorded SGLang 0.5.17 exchanges.

The runtime sends token ids, so text recordings are replayed re-keyed to the ids the server
made of their text (fixture ``as_input_ids``); bodies use the recorded form
(``sampling_defaults=server``; the default ``explicit`` form is tested in ``test_params``).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from orchestrator.runtimes.sglang.replay import Recording, ReplayServer
from orchestrator.runtimes.sglang.runtime import SGLangRuntime
from orchestrator.runtimes.sglang.tokenizer import ChatTokenizer

from orchestrator import (
    Capability,
    CapabilityMissing,
    ChatMessage,
    ContextOverflow,
    GenerateRequest,
    GenerateResult,
    Grammar,
    Prompt,
    SamplingParams,
    ScoreRequest,
    Usage,
)

pytestmark = pytest.mark.anyio

QUESTION = Prompt(messages=(ChatMessage(role="user", content="What is 12 + 7?"),))
CHAT_IDS = [1, 4093, 198, 1780, 314, 216, 33, 34, 1232, 216, 39, 47, 2, 198, 1, 520, 9531, 198]
ToIds = Callable[[Recording], Recording]


def prefix_ids(recordings: dict[str, Recording]) -> list[int]:
    return list(recordings["prefill_only"].body["input_ids"])


async def test_capabilities_and_identity(
    make_runtime: Callable[..., SGLangRuntime], server: ReplayServer
) -> None:
    runtime = make_runtime(server)
    assert runtime.capabilities == (
        Capability.PREFIX_SHARING | Capability.STREAMING | Capability.GRAMMAR
    )
    assert Capability.EXACT_ENTROPY not in runtime.capabilities
    assert make_runtime(server, deterministic="true", grammar="false").capabilities == (
        Capability.PREFIX_SHARING | Capability.STREAMING | Capability.DETERMINISTIC_SAMPLING
    )
    assert (runtime.provider, runtime.model, runtime.eos_token_ids) == (
        "sglang",
        "SmolLM2-135M-Instruct",
        (2,),
    )
    assert await runtime.render(QUESTION) == CHAT_IDS


async def test_greedy_length_limit_with_usage_and_meta(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    server.expect(recordings["generate_length"])
    runtime = make_runtime(server)
    sampling = SamplingParams(max_new_tokens=4, temperature=0, ignore_eos=True)
    [result] = await runtime.generate(
        [GenerateRequest(prompt=QUESTION, sampling=sampling, request_id="q1")]
    )
    [completion] = result.completions
    assert (completion.text, completion.token_ids) == ("12 + ", [33, 34, 1232, 216])
    assert (completion.finish_reason, completion.matched_stop) == ("length", None)
    assert result.usage == Usage(prompt_tokens=18, cached_tokens=17, generated_tokens=4)
    assert result.request_id == "q1"
    assert result.meta == {"server": server.url, "rid": "q1"}
    assert server.log[0].body["rid"] == "q1"


async def test_greedy_text_recording_through_the_runtime(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
    as_input_ids: ToIds,
) -> None:
    server.expect(as_input_ids(recordings["generate_text_greedy"]))
    runtime = make_runtime(server)
    [result] = await runtime.generate(
        [
            GenerateRequest(
                prompt=QUESTION, sampling=SamplingParams(max_new_tokens=24, temperature=0)
            )
        ]
    )
    assert result.completions[0].text == (
        "12 + 7 = 8\n\nThis is a classic example of a simple equation that can be solved using"
    )
    assert result.usage == Usage(prompt_tokens=18, cached_tokens=0, generated_tokens=24)


@pytest.mark.parametrize(
    ("name", "sampling"),
    [
        ("generate_stop_string", SamplingParams(max_new_tokens=48, temperature=0, stop=".")),
        (
            "generate_stop_token_ids",
            SamplingParams(max_new_tokens=48, temperature=0, stop_token_ids=[30]),
        ),
    ],
)
async def test_stop_strings_and_ids_are_sent_as_sglang_keys(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
    as_input_ids: ToIds,
    name: str,
    sampling: SamplingParams,
) -> None:
    server.expect(as_input_ids(recordings[name]))
    [result] = await make_runtime(server).generate(
        [GenerateRequest(prompt=QUESTION, sampling=sampling)]
    )
    # Neither stop occurs in the first 48 greedy tokens: the answer runs to the length limit.
    assert result.completions[0].finish_reason == "length"
    assert len(result.completions[0].token_ids) == 48
    server.assert_clean()


async def test_json_schema_output_ends_before_the_matched_eos(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
    as_input_ids: ToIds,
) -> None:
    server.expect(as_input_ids(recordings["generate_json_schema"]))
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    sampling = SamplingParams(max_new_tokens=64, temperature=0, grammar=Grammar(json_schema=schema))
    [result] = await make_runtime(server).generate(
        [GenerateRequest(prompt=QUESTION, sampling=sampling)]
    )
    [completion] = result.completions
    assert completion.text == '{\n  "answer"\n\n:\n\n-12\n\n}'
    assert (completion.finish_reason, completion.matched_stop) == ("stop", 2)
    assert completion.token_ids[-2:] == [198, 109]  # the recorded ids end [..., 109, 2]
    assert len(completion.token_ids) == 19


async def test_grammar_without_the_capability_is_refused(
    make_runtime: Callable[..., SGLangRuntime], server: ReplayServer
) -> None:
    runtime = make_runtime(server, grammar="false")
    sampling = SamplingParams(grammar=Grammar(regex="[0-9]+"))
    with pytest.raises(CapabilityMissing, match="runtime 'sglang': does not support GRAMMAR"):
        await runtime.generate([GenerateRequest(prompt="x", sampling=sampling)])
    assert server.log == []


async def test_n4_seeded_is_one_request_whose_samples_reuse_the_prompt(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    server.expect(recordings["generate_n4_seeded"])
    sampling = SamplingParams(max_new_tokens=16, temperature=0.8, n=4, seed=7)
    runtime = make_runtime(server)
    [result] = await runtime.generate([GenerateRequest(prompt=QUESTION, sampling=sampling)])
    assert [c.text for c in result.completions] == [
        "To find 12 + 7, you simply add them together: ",
        "To convert 12 + 7, we need to find 2 times",
        "To find 12 + 7, we can start by adding 7",
        "To calculate 12 + 7, we need to add 1 +",
    ]
    # SGLang prefills the prompt once, then forks it: N * (P - 1) cached.
    assert result.usage == Usage(prompt_tokens=72, cached_tokens=4 * 17, generated_tokens=64)
    assert runtime.statistics().requests == 1


async def test_a_batch_runs_concurrently_and_answers_in_order(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    server.expect(recordings["generate_n4_seeded"])
    server.expect(recordings["generate_length"])
    runtime = make_runtime(server)
    results = await runtime.generate(
        [
            GenerateRequest(
                prompt=QUESTION,
                sampling=SamplingParams(max_new_tokens=4, temperature=0, ignore_eos=True),
            ),
            GenerateRequest(
                prompt=QUESTION,
                sampling=SamplingParams(max_new_tokens=16, temperature=0.8, n=4, seed=7),
            ),
        ]
    )
    assert [len(r.completions) for r in results] == [1, 4]
    assert results[0].completions[0].text == "12 + "
    # 18 prompt tokens: under min_prefix_tokens (32), so no prefill was sent first.
    assert runtime.statistics().prefills == 0
    server.assert_clean()


async def test_fanout_prefills_the_shared_prefix_before_the_children(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    prefix = prefix_ids(recordings)
    release = anyio.Event()
    server.expect(recordings["prefill_only"], hold=release)
    server.expect(recordings["fanout_child_cached"])
    server.expect(recordings["error_prompt_too_long"])
    runtime = make_runtime(server)
    child = GenerateRequest(
        prompt=[*prefix, 5970, 216, 33, 42],
        sampling=SamplingParams(max_new_tokens=8, temperature=0.8, seed=1),
    )
    too_long = GenerateRequest(
        prompt=(prefix * 20)[:2100], sampling=SamplingParams(max_new_tokens=4)
    )
    outcome: list[BaseException] = []

    async def run() -> None:
        try:
            await runtime.generate([child, too_long])
        except ContextOverflow as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await server.wait_for("/generate")
        await anyio.wait_all_tasks_blocked()
        # While the prefix is being prefilled, no child has been sent.
        assert [e.answered_by for e in server.log] == ["prefill_only"]
        release.set()
    assert next(e.answered_by for e in server.log) == "prefill_only"
    assert sorted(e.answered_by or "" for e in server.log[1:]) == [
        "error_prompt_too_long",
        "fanout_child_cached",
    ]
    assert server.log[0].body["input_ids"] == prefix and len(prefix) == 128
    [error] = outcome
    assert str(error) == "prompt of 2100 tokens exceeds the model's context of 2048 tokens"
    stats = runtime.statistics()
    assert (stats.requests, stats.prefills) == (3, 1)
    # prefill: 127 of 128 cached (a warm server); the child: the whole 128-token prefix.
    assert stats.cached_tokens == 127 + 128


async def test_fanout_result_records_the_prefill(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    prefix = prefix_ids(recordings)
    server.expect(recordings["prefill_only"])
    server.expect(recordings["fanout_child_cached"])
    server.expect(recordings["error_prompt_too_long"])
    runtime = make_runtime(server)
    child = GenerateRequest(
        prompt=[*prefix, 5970, 216, 33, 42],
        request_id="c1",
        sampling=SamplingParams(max_new_tokens=8, temperature=0.8, seed=1),
    )
    too_long = GenerateRequest(
        prompt=(prefix * 20)[:2100], sampling=SamplingParams(max_new_tokens=4)
    )
    with pytest.raises(ContextOverflow):
        await runtime.generate([child, too_long])
    # Alone, the child is not a fan-out: it goes straight out, and reuses the cached prefix.
    server.expect(recordings["fanout_child_cached"])
    [result] = await runtime.generate([child])
    assert result.usage == Usage(prompt_tokens=132, cached_tokens=128, generated_tokens=8)
    assert result.completions[0].text == " Solve the following problem. You are a"
    assert "prefix_prefill" not in result.meta
    assert runtime.statistics().prefills == 1


async def test_fanout_off_sends_children_directly(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    prefix = prefix_ids(recordings)
    server.expect(recordings["fanout_child_cached"])
    server.expect(recordings["error_prompt_too_long"])
    runtime = make_runtime(server, fanout="false")
    with pytest.raises(ContextOverflow):
        await runtime.generate(
            [
                GenerateRequest(
                    prompt=[*prefix, 5970, 216, 33, 42],
                    sampling=SamplingParams(max_new_tokens=8, temperature=0.8, seed=1),
                ),
                GenerateRequest(
                    prompt=(prefix * 20)[:2100], sampling=SamplingParams(max_new_tokens=4)
                ),
            ]
        )
    assert runtime.statistics().prefills == 0
    server.assert_clean()


async def test_score_uses_prompt_logprobs_from_the_prompts_last_token(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    rec = recordings["generate_prompt_logprobs"]
    server.expect(rec)
    runtime = make_runtime(server)
    [result] = await runtime.score([ScoreRequest(prompt=[1], continuations=(tuple(CHAT_IDS[1:]),))])
    expected = [e[0] for e in rec.response_json["meta_info"]["input_token_logprobs"][1:]]
    assert result.token_logprobs == [expected]
    assert result.token_logprobs[0][:2] == [-14.070354461669922, -3.330918073654175]
    assert result.logprobs == [sum(expected)]
    assert result.usage == Usage(prompt_tokens=18, cached_tokens=0, generated_tokens=1)
    assert server.log[0].body["logprob_start_len"] == 0


async def test_score_of_an_empty_continuation_sends_nothing(
    make_runtime: Callable[..., SGLangRuntime], server: ReplayServer
) -> None:
    [result] = await make_runtime(server).score([ScoreRequest(prompt="x", continuations=("",))])
    assert (result.logprobs, result.token_logprobs) == ([0], [[]])
    assert server.log == []


async def test_user_text_with_markup_and_control_strings_is_sent_as_plain_token_ids(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
    tokenizer: ChatTokenizer,
) -> None:
    question = 'Plan: <Thread>1: add</Thread> </Outlines> {"answer": 19} <|im_end|> ok?'
    server.expect(recordings["generate_length"], match=lambda body: True)
    runtime = make_runtime(server)
    prompt = Prompt(messages=(ChatMessage(role="user", content=question),))
    await runtime.generate([GenerateRequest(prompt=prompt)])
    ids = server.log[0].body["input_ids"]
    # Only the template's own markers are control tokens: one <|im_end|>, two <|im_start|>.
    assert (ids.count(tokenizer.im_end_id), ids.count(tokenizer.im_start_id)) == (1, 2)
    assert ids[-6:] == [tokenizer.im_end_id, 198, tokenizer.im_start_id, 520, 9531, 198]
    assert tokenizer.decode(ids) == (
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode(ids[1 : ids.index(tokenizer.im_end_id)]) == "user\n" + question


async def test_a_forks_separate_concurrent_calls_also_prefill_their_prefix_first(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    # The executor calls a runtime once per node: a fork's children arrive as separate calls.
    prefix = prefix_ids(recordings)
    for name in ("prefill_only", "fanout_child_cached", "error_prompt_too_long"):
        server.expect(recordings[name])
    runtime = make_runtime(server)
    child = GenerateRequest(
        prompt=[*prefix, 5970, 216, 33, 42],
        request_id="t/c1",
        sampling=SamplingParams(max_new_tokens=8, temperature=0.8, seed=1),
    )
    too_long = GenerateRequest(
        prompt=(prefix * 20)[:2100], request_id="t/c2", sampling=SamplingParams(max_new_tokens=4)
    )
    results: list[GenerateResult] = []
    errors: list[ContextOverflow] = []

    async def call(request: GenerateRequest) -> None:
        try:
            results.extend(await runtime.generate([request]))
        except ContextOverflow as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, child)
        tg.start_soon(call, too_long)
    assert server.log[0].answered_by == "prefill_only"
    [result] = results
    assert result.usage.cached_tokens == 128
    assert result.meta["prefix_prefill"] == {
        "server": server.url,
        "rid": server.log[0].body["rid"],
        "prefix_tokens": 128,
        "shared_by": 2,
        "prompt_tokens": 128,
        "cached_tokens": 127,
    }
    assert len(errors) == 1
    server.assert_clean()


async def test_entropy_requests_top_logprobs_and_reports_the_approximation(
    make_runtime: Callable[..., SGLangRuntime],
    server: ReplayServer,
    recordings: dict[str, Recording],
) -> None:
    def asks_for_top_logprobs(body: dict[str, object]) -> bool:
        return body["return_logprob"] is True and body["top_logprobs_num"] == 20

    # The recorded answer carries 5 top logprobs per position: the approximation uses them.
    server.expect(recordings["generate_ids_logprobs"], match=asks_for_top_logprobs)
    runtime = make_runtime(server)
    sampling = SamplingParams(max_new_tokens=16, temperature=0, return_entropy=True)
    [result] = await runtime.generate([GenerateRequest(prompt=QUESTION, sampling=sampling)])
    [completion] = result.completions
    assert completion.entropies is not None and len(completion.entropies) == 16
    assert completion.entropies[0] == pytest.approx(1.5480, abs=1e-4)
    assert (completion.logprobs, completion.top_logprobs) == (None, None)
    assert result.meta["fallback"] == (
        "sglang: entropies approximated from the top 20 logprobs (a lower bound: no EXACT_ENTROPY)"
    )
    server.assert_clean()
