"""Bad input gives a clear error naming the problem, and no path leaks a KV block: blocks
in use return to zero after finished, cancelled and failed requests (issue #3 §2, §8)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from orchestrator.runtimes.embedded import EmbeddedRuntime
from pydantic import ValidationError

from orchestrator import (
    ConfigError,
    ContextOverflow,
    GenerateRequest,
    Grammar,
    RequestRejected,
    RuntimeFailure,
    RuntimeUnavailable,
    SamplingParams,
)

pytestmark = pytest.mark.anyio


def request(prompt: str | list[int] = "Tell me a story", **sampling: object) -> GenerateRequest:
    return GenerateRequest(
        prompt=prompt, sampling=SamplingParams(**{"max_new_tokens": 8, **sampling})
    )


async def test_prompt_longer_than_the_context(runtime: EmbeddedRuntime) -> None:
    with pytest.raises(
        ContextOverflow, match=r"^prompt of 2048 tokens exceeds the model's context of 2048 tokens$"
    ):
        await runtime.generate([request([5] * 2048)])
    assert runtime.statistics().blocks_in_use == 0


async def test_generation_is_capped_at_the_context(runtime: EmbeddedRuntime) -> None:
    [result] = await runtime.generate(
        [request([5] * 2044, max_new_tokens=50, temperature=0, ignore_eos=True)]
    )
    assert (result.completions[0].finish_reason, result.usage.generated_tokens) == ("length", 4)


async def test_bad_prompts_are_rejected(make_runtime: Callable[..., EmbeddedRuntime]) -> None:
    runtime = make_runtime(kv_cache_bytes=64 * 2048)  # 64 blocks of 4 tokens
    with pytest.raises(
        RequestRejected, match=r"^runtime 'orchestrator\.embedded': the prompt is empty$"
    ):
        await runtime.generate([request([])])
    with pytest.raises(RequestRejected, match="token id 49152 is outside the vocabulary of 49152"):
        await runtime.generate([request([1, 49152])])
    with pytest.raises(
        RequestRejected, match="a prompt of 300 tokens exceeds the KV cache budget of 64 blocks"
    ):
        await runtime.generate([request([5] * 300)])
    assert runtime.statistics().blocks_in_use == 0


def test_wrong_stop_type_is_rejected_by_the_sampling_params() -> None:
    with pytest.raises(ValidationError, match="stop must be a string or a list of strings, got 7"):
        SamplingParams(stop=7)  # type: ignore[arg-type]
    with pytest.raises(
        ValidationError, match=r"stop_token_ids must be a list of integers, got \['2'\]"
    ):
        SamplingParams(stop_token_ids=["2"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        (Grammar(ebnf="root ::= ("), "EBNF parser error"),
        (Grammar(regex="(ab"), "Regex parsing error"),
        (Grammar(json_schema={"type": "nonsense"}), 'Unsupported type "nonsense"'),
    ],
)
async def test_impossible_grammar(runtime: EmbeddedRuntime, grammar: Grammar, reason: str) -> None:
    with pytest.raises(RequestRejected, match=f"invalid grammar: .*{reason}"):
        await runtime.generate([request(grammar=grammar)])
    assert runtime.statistics().blocks_in_use == 0


def test_unknown_model_path(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=f"^model: model path {tmp_path / 'nope'} does not exist$"
    ):
        EmbeddedRuntime.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(
        ConfigError, match=r"has no config\.json: not a Hugging Face model directory"
    ):
        EmbeddedRuntime.from_pretrained(str(tmp_path))


def test_corrupt_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in tiny_model_dir.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(RuntimeUnavailable, match=f"weights file {weights} is corrupt"):
        EmbeddedRuntime.from_pretrained(str(broken))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"not a gguf at all")
    with pytest.raises(RuntimeUnavailable, match=f"{gguf} is not a GGUF file"):
        EmbeddedRuntime.from_pretrained(str(gguf))


def test_bad_engine_options(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) bogus"):
        EmbeddedRuntime.from_pretrained(str(tiny_model_dir), bogus=1)
    with pytest.raises(
        ConfigError, match=r"unknown attention backend 'flash' \(known: sdpa, segment\)"
    ):
        EmbeddedRuntime.from_pretrained(str(tiny_model_dir), attention="flash")
    with pytest.raises(ConfigError, match=r"^layers: must be between 1 and 2, got 3$"):
        EmbeddedRuntime.from_pretrained(str(tiny_model_dir), layers=3)


async def test_cancelled_requests_free_their_blocks_at_once(runtime: EmbeddedRuntime) -> None:
    long = request("Write a long essay", max_new_tokens=400, ignore_eos=True)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runtime.generate, [long, long])
            received = 0
            async for _chunk in runtime.stream(long):
                received += 1
                if received == 3:
                    assert runtime.statistics().blocks_in_use > 0
                    scope.cancel()
    assert scope.cancelled_caught
    assert runtime.statistics().blocks_in_use == 0


async def test_a_closed_stream_frees_its_blocks(runtime: EmbeddedRuntime) -> None:
    stream = runtime.stream(request(max_new_tokens=100, ignore_eos=True))
    async for _chunk in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert runtime.statistics().blocks_in_use == 0


async def test_a_failed_step_fails_its_requests_and_frees_their_blocks(
    runtime: EmbeddedRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = runtime.engine.runner
    original, calls = runner.run, []

    def failing(*args: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated out of memory")
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run", failing)
    with pytest.raises(RuntimeFailure, match="model step failed: simulated out of memory") as info:
        await runtime.generate(
            [request(max_new_tokens=10), request("Another one", max_new_tokens=10)]
        )
    assert isinstance(info.value.__cause__, RuntimeError)
    assert runtime.statistics().blocks_in_use == 0
    monkeypatch.setattr(runner, "run", original)
    [ok] = await runtime.generate([request(max_new_tokens=3)])  # the runtime still works
    assert ok.usage.generated_tokens == 3


async def test_preemption_under_a_small_budget_changes_nothing(
    make_runtime: Callable[..., EmbeddedRuntime],
) -> None:
    prompts = [f"Story number {i}: once upon a time" for i in range(4)]
    params = {"max_new_tokens": 24, "temperature": 0, "ignore_eos": True}
    roomy = await make_runtime().generate([request(p, **params) for p in prompts])
    tight = make_runtime(kv_cache_bytes=24 * 2048)  # 24 blocks: 4 sequences need 4 x 9
    squeezed = await tight.generate([request(p, **params) for p in prompts])
    assert [r.completions[0].token_ids for r in squeezed] == [
        r.completions[0].token_ids for r in roomy
    ]
    assert tight.statistics().blocks_in_use == 0
    assert tight.engine.runner.tokens_computed > make_runtime().engine.runner.tokens_computed


async def test_closed_runtime_refuses_work(runtime: EmbeddedRuntime) -> None:
    await runtime.aclose()
    await runtime.aclose()  # idempotent
    with pytest.raises(RuntimeUnavailable, match="the runtime is closed"):
        await runtime.generate([request()])
