"""The in-process backend, on a stand-in ``sglang.Engine`` that replays recorded outputs.

``Engine.async_generate`` returns what the HTTP server sends, so the stand-in answers with
the recorded JSON (and, streaming, the recorded chunks); SGLang's validation errors are
``ValueError`` s carrying the message the server puts in its 400.
"""

from __future__ import annotations

import json
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from orchestrator.runtimes.sglang.config import SGLangConfig
from orchestrator.runtimes.sglang.engine import EngineBackend
from orchestrator.runtimes.sglang.replay import Recording, bodies_match
from orchestrator.runtimes.sglang.runtime import SGLangRuntime
from orchestrator.runtimes.sglang.tokenizer import ChatTokenizer

from orchestrator import (
    CapabilityMissing,
    ChatMessage,
    ContextOverflow,
    GenerateRequest,
    Prompt,
    SamplingParams,
)

pytestmark = pytest.mark.anyio

QUESTION = Prompt(messages=(ChatMessage(role="user", content="What is 12 + 7?"),))


class FakeEngine:
    """``sglang.Engine``'s calling convention, answering from recordings."""

    def __init__(self, recordings: list[Recording], **server_args: Any) -> None:
        self.recordings = recordings
        self.server_args = server_args
        self.calls: list[dict[str, Any]] = []
        self.aborted: list[str] = []
        self.shut_down = False
        self.tokenizer_manager = types.SimpleNamespace(abort_request=self.aborted.append)

    async def async_generate(
        self,
        prompt: str | None = None,
        sampling_params: dict[str, Any] | None = None,
        input_ids: list[int] | None = None,
        return_logprob: bool | None = None,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        stream: bool = False,
        rid: str | None = None,
    ) -> Any:
        args = {
            "text": prompt,
            "sampling_params": sampling_params,
            "input_ids": input_ids,
            "return_logprob": return_logprob,
            "logprob_start_len": logprob_start_len,
            "top_logprobs_num": top_logprobs_num,
            "rid": rid,
            "stream": True if stream else None,
        }
        body = {k: v for k, v in args.items() if v is not None}
        self.calls.append(body)
        for rec in self.recordings:
            if bodies_match(rec.body, body):
                break
        else:
            raise AssertionError(f"unexpected engine call {body}")
        if rec.status == 400:
            raise ValueError(rec.response_json["error"]["message"])
        if rec.sse_lines is not None:
            return self._chunks(rec.sse_lines)
        return rec.response_json

    @staticmethod
    async def _chunks(lines: tuple[str, ...]) -> AsyncIterator[dict[str, Any]]:
        for line in lines[:-1]:  # all but "data: [DONE]"
            yield json.loads(line.removeprefix("data: "))

    def shutdown(self) -> None:
        self.shut_down = True


@pytest.fixture
def engine_runtime(
    recordings: dict[str, Recording],
    tokenizer: ChatTokenizer,
    as_input_ids: Callable[[Recording], Recording],
) -> tuple[SGLangRuntime, FakeEngine]:
    engine = FakeEngine(
        [
            recordings["generate_n4_seeded"],
            recordings["error_prompt_too_long"],
            as_input_ids(recordings["generate_stream"]),
        ]
    )
    backend = EngineBackend(engine, model_path="/models/smol")
    config = SGLangConfig(sampling_defaults="server")
    return SGLangRuntime([backend], tokenizer, config), engine


async def test_generate_through_the_engine(
    engine_runtime: tuple[SGLangRuntime, FakeEngine],
) -> None:
    runtime, engine = engine_runtime
    sampling = SamplingParams(max_new_tokens=16, temperature=0.8, n=4, seed=7)
    [result] = await runtime.generate(
        [GenerateRequest(prompt=QUESTION, sampling=sampling, request_id="e1")]
    )
    assert len(result.completions) == 4
    assert result.meta == {"server": "engine:/models/smol", "rid": "e1"}
    assert engine.calls[0]["rid"] == "e1" and "stream" not in engine.calls[0]
    await runtime.aclose()
    assert engine.shut_down


async def test_stream_through_the_engine(engine_runtime: tuple[SGLangRuntime, FakeEngine]) -> None:
    runtime, _ = engine_runtime
    request = GenerateRequest(
        prompt=QUESTION, sampling=SamplingParams(max_new_tokens=12, temperature=0)
    )
    texts = [c.text async for c in runtime.stream(request)]
    assert "".join(texts) == "12 + 7 = 8\n\nThis is"


async def test_engine_errors_map_like_the_servers(
    engine_runtime: tuple[SGLangRuntime, FakeEngine],
    recordings: dict[str, Recording],
) -> None:
    runtime, _ = engine_runtime
    prefix = recordings["prefill_only"].body["input_ids"]
    request = GenerateRequest(
        prompt=(prefix * 20)[:2100], sampling=SamplingParams(max_new_tokens=4)
    )
    with pytest.raises(
        ContextOverflow, match="prompt of 2100 tokens exceeds the model's context of 2048 tokens"
    ) as info:
        await runtime.generate([request])
    rejected = info.value.__cause__
    assert "sglang.Engine refused the request: The input (2100 tokens)" in str(rejected)
    assert isinstance(rejected.__cause__, ValueError)


async def test_keys_the_engine_lacks_are_refused_and_abort_reaches_it(
    recordings: dict[str, Recording],
) -> None:
    engine = FakeEngine([])
    backend = EngineBackend(engine, model_path="/m")
    with pytest.raises(
        CapabilityMissing,
        match=r"does not support /generate keys "
        r"\['session_params'\] on sglang.Engine",
    ):
        await backend.generate({"input_ids": [1], "session_params": {"id": "s"}})
    await backend.abort("r1")
    assert engine.aborted == ["r1"]


def test_start_builds_the_engine_with_the_server_args(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("sglang")
    fake.Engine = lambda **kwargs: FakeEngine([], **kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "sglang", fake)
    backend = EngineBackend.start("/models/smol", mem_fraction_static=0.5)
    assert backend._engine.server_args == {"model_path": "/models/smol", "mem_fraction_static": 0.5}
    assert backend.name == "sglang-engine@/models/smol"
