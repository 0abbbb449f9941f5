"""Conformance of the SGLang runtime against a real SGLang server (tier ``sglang_server``).

Skipped unless ``ORCHESTRATOR_SGLANG_URL`` names a running server (the root conftest says
so in the skip reason). On the GPU machine, with the kit (``shared/tools/sglang-gpu-kit``)::

    python3 -m sglang.launch_server --model-path /tmp/model --port 30000 \\
        --attention-backend triton --sampling-backend pytorch --grammar-backend xgrammar \\
        --cuda-graph-backend-decode full --cuda-graph-backend-prefill disabled \\
        --mem-fraction-static 0.5 --context-length 2048 &
    ORCHESTRATOR_SGLANG_URL=http://127.0.0.1:30000 python3 -m pytest \\
        tests/runtimes/sglang/test_conformance.py -m sglang_server -rA

``ORCHESTRATOR_SGLANG_TOKENIZER`` may name the served model's tokenizer (default: SmolLM2's
GGUF, the kit's model). The server's version is recorded as the ``sglang_version`` property
of every test (``--junitxml`` keeps it).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from orchestrator.runtimes.sglang.client import SGLangClient
from orchestrator.runtimes.sglang.config import SGLangConfig
from orchestrator.runtimes.sglang.runtime import SGLangRuntime
from orchestrator.runtimes.sglang.tokenizer import ChatTokenizer

from orchestrator import (
    ChatMessage,
    ContextOverflow,
    GenerateRequest,
    GenerateResult,
    Grammar,
    PluginManager,
    Prompt,
    RequestRejected,
    SamplingParams,
    ScoreRequest,
)

pytestmark = [pytest.mark.sglang_server, pytest.mark.anyio]

URL = os.environ.get("ORCHESTRATOR_SGLANG_URL", "")
QUESTIONS = (
    "What is 12 + 7?",
    "Name the capital of France.",
    "Write one sentence about the sea.",
)
#: bf16 on the server against the embedded runtime's fp32: per-token logprob tolerance, and
#: the largest top-2 gap (nats) at which a greedy divergence still counts as a near-tie.
LOGPROB_TOLERANCE = 0.15
NEAR_TIE = 0.25


def chat(question: str) -> Prompt:
    return Prompt(messages=(ChatMessage(role="user", content=question),))


@pytest.fixture(scope="module")
def live_tokenizer() -> ChatTokenizer:
    return ChatTokenizer.load(os.environ.get("ORCHESTRATOR_SGLANG_TOKENIZER"))


@pytest.fixture
async def runtime(
    live_tokenizer: ChatTokenizer, record_property: Callable[[str, object], None]
) -> AsyncIterator[SGLangRuntime]:
    async with SGLangClient(URL) as client:
        await client.wait_ready(timeout_s=600)
        record_property("sglang_version", (await client.server_info()).get("version"))
    rt = SGLangRuntime.connect([URL], live_tokenizer, SGLangConfig())
    yield rt
    await rt.aclose()


async def flush(url: str = URL) -> None:
    async with SGLangClient(url) as client:
        await client.flush_cache()


def long_prompt(tokenizer: ChatTokenizer, num_tokens: int) -> list[int]:
    ids = tokenizer.encode_text(
        "You are a careful assistant. Solve the problem step by step. " * 64
    )
    return ids[:num_tokens]


async def test_greedy_matches_the_embedded_runtime_within_bf16_tolerance(
    runtime: SGLangRuntime,
) -> None:
    manager = PluginManager()
    manager.load_entrypoints()
    if "embedded" not in manager.registry.names("runtime"):
        pytest.skip("the embedded runtime is not installed")
    import torch

    options = {"device": "cuda", "dtype": "bf16"} if torch.cuda.is_available() else {}
    embedded = manager.registry.get("runtime", "embedded").factory("smollm2", options)
    sampling = SamplingParams(max_new_tokens=32, temperature=0, logprobs=True, top_logprobs=2)
    requests = [GenerateRequest(prompt=chat(q), sampling=sampling) for q in QUESTIONS]
    try:
        ours = await runtime.generate(requests)
        theirs = await embedded.generate(requests)
    finally:
        await embedded.aclose()
    for question, a, b in zip(QUESTIONS, ours, theirs, strict=True):
        _compare_greedy(question, a, b)


def _compare_greedy(question: str, sglang: GenerateResult, embedded: GenerateResult) -> None:
    s, e = sglang.completions[0], embedded.completions[0]
    assert s.logprobs is not None and e.logprobs is not None and e.top_logprobs is not None
    for i, (s_id, e_id) in enumerate(zip(s.token_ids, e.token_ids, strict=False)):
        if s_id != e_id:
            top = sorted(e.top_logprobs[i].values(), reverse=True)
            assert top[0] - top[1] <= NEAR_TIE, (
                f"{question!r}: diverged at token {i} ({s_id} vs {e_id}) without a near-tie "
                f"(top-2 gap {top[0] - top[1]:.3f})"
            )
            return
        assert abs(s.logprobs[i] - e.logprobs[i]) <= LOGPROB_TOLERANCE, (question, i)


async def test_fanout_children_reuse_the_prefilled_prefix(runtime: SGLangRuntime) -> None:
    await flush()
    prompt = long_prompt(runtime.tokenizer, 256)
    sampling = [
        SamplingParams(max_new_tokens=16, temperature=0.8, ignore_eos=True, seed=i)
        for i in range(16)
    ]
    results = await runtime.generate(
        [
            GenerateRequest(prompt=prompt, sampling=s, request_id=f"fan/{i}")
            for i, s in enumerate(sampling)
        ]
    )
    cached = sum(r.usage.cached_tokens for r in results)
    assert cached >= 16 * (256 - 1)
    assert runtime.statistics().prefills == 1
    assert {r.meta["prefix_prefill"]["prefix_tokens"] for r in results} == {256}


async def test_n_samples_reuse_the_prompt(runtime: SGLangRuntime) -> None:
    await flush()
    prompt = long_prompt(runtime.tokenizer, 256)
    sampling = SamplingParams(max_new_tokens=16, temperature=0.8, n=8, ignore_eos=True)
    [result] = await runtime.generate([GenerateRequest(prompt=prompt, sampling=sampling)])
    assert len(result.completions) == 8
    assert result.usage.cached_tokens >= 8 * (256 - 1)


async def test_abort_stops_a_long_generation(runtime: SGLangRuntime) -> None:
    sampling = SamplingParams(max_new_tokens=1500, temperature=0.8, ignore_eos=True)
    results: list[GenerateResult] = []

    async def run() -> None:
        results.extend(
            await runtime.generate(
                [
                    GenerateRequest(
                        prompt=chat(QUESTIONS[0]), sampling=sampling, request_id="abort-me"
                    )
                ]
            )
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.sleep(0.5)  # a real server: let it generate for a while
        assert await runtime.abort("abort-me")
    [completion] = results[0].completions
    assert completion.finish_reason == "abort"
    assert 0 < len(completion.token_ids) < 1500


async def test_closing_a_stream_aborts_it(runtime: SGLangRuntime) -> None:
    sampling = SamplingParams(max_new_tokens=1500, temperature=0.8, ignore_eos=True)
    stream = runtime.stream(GenerateRequest(prompt=chat(QUESTIONS[0]), sampling=sampling))
    for _ in range(5):
        await anext(stream)
    await stream.aclose()
    assert runtime.statistics().aborts == 1


async def test_json_schema_gives_valid_json(runtime: SGLangRuntime) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    requests = [
        GenerateRequest(
            prompt=chat(QUESTIONS[0]),
            sampling=SamplingParams(
                max_new_tokens=64, temperature=t, seed=3, grammar=Grammar(json_schema=schema)
            ),
        )
        for t in (0.0, 0.8)
    ]
    for result in await runtime.generate(requests):
        value: Any = json.loads(result.completions[0].text)
        assert isinstance(value["answer"], int)


async def test_stream_and_generate_agree_on_greedy_output(runtime: SGLangRuntime) -> None:
    request = GenerateRequest(
        prompt=chat(QUESTIONS[1]), sampling=SamplingParams(max_new_tokens=24, temperature=0)
    )
    [result] = await runtime.generate([request])
    chunks = [c async for c in runtime.stream(request)]
    assert "".join(c.text for c in chunks) == result.completions[0].text
    assert chunks[-1].completion is not None
    assert chunks[-1].completion.token_ids == result.completions[0].token_ids


async def test_score_agrees_with_generation_logprobs(runtime: SGLangRuntime) -> None:
    sampling = SamplingParams(max_new_tokens=8, temperature=0, logprobs=True)
    [result] = await runtime.generate(
        [GenerateRequest(prompt=chat(QUESTIONS[0]), sampling=sampling)]
    )
    completion = result.completions[0]
    [score] = await runtime.score(
        [ScoreRequest(prompt=chat(QUESTIONS[0]), continuations=(tuple(completion.token_ids),))]
    )
    assert completion.logprobs is not None
    assert score.token_logprobs[0] == pytest.approx(completion.logprobs, abs=LOGPROB_TOLERANCE)


async def test_errors_map_to_the_cores_exceptions(runtime: SGLangRuntime) -> None:
    too_long = long_prompt(runtime.tokenizer, 256) * 9
    with pytest.raises(ContextOverflow):
        await runtime.generate([GenerateRequest(prompt=too_long[:2100])])
    async with SGLangClient(URL) as client:
        with pytest.raises(RequestRejected, match="HTTP 400"):
            await client.request(
                "POST",
                "/generate",
                {
                    "input_ids": [1, 2],
                    "sampling_params": {"max_new_tokens": 4, "json_schema": "{not json"},
                },
            )


async def test_session_child_reuses_its_parent(runtime: SGLangRuntime) -> None:
    greedy = SamplingParams(max_new_tokens=8, temperature=0)
    async with runtime.open_session("conformance") as session:
        root = await session.generate(chat(QUESTIONS[0]), greedy, request_id="c-root")
        child = await session.generate(" Then", greedy, request_id="c-child", parent="c-root")
    assert child.usage.cached_tokens >= root.usage.prompt_tokens + 8 - 1
