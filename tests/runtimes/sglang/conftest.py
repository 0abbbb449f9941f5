"""Fixtures for the SGLang runtime tests: recordings, the tokenizer, replay servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from orchestrator.runtimes.sglang.config import SGLangConfig
from orchestrator.runtimes.sglang.replay import Recording, ReplayServer, load_recordings
from orchestrator.runtimes.sglang.runtime import SGLangRuntime
from orchestrator.runtimes.sglang.tokenizer import ChatTokenizer

DATA = Path(__file__).parents[2] / "data" / "sglang-0.5.17"


@pytest.fixture(scope="session")
def recordings() -> dict[str, Recording]:
    return load_recordings(DATA)


@pytest.fixture(scope="session")
def tokenizer() -> ChatTokenizer:
    """SmolLM2's tokenizer from the GGUF (loading takes seconds: once per session)."""
    return ChatTokenizer.load()


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    """A replay server with nothing expected; the test adds recordings. Unexpected requests
    fail the test at teardown."""
    async with ReplayServer() as replay:
        yield replay
        replay.assert_clean(all_used=False)


RuntimeFactory = Callable[..., SGLangRuntime]


@pytest.fixture
async def make_runtime(tokenizer: ChatTokenizer) -> AsyncIterator[RuntimeFactory]:
    """Build runtimes over replay servers; closed at teardown.

    Defaults suit replay: bodies in the recorded form (``sampling_defaults=server``), and
    quick retries.
    """
    made: list[SGLangRuntime] = []

    def build(*servers: ReplayServer, **options: object) -> SGLangRuntime:
        config = SGLangConfig.model_validate(
            {"sampling_defaults": "server", "max_attempts": 2, "backoff_s": 0.001, **options}
        )
        runtime = SGLangRuntime.connect([s.url for s in servers], tokenizer, config)
        made.append(runtime)
        return runtime

    yield build
    for runtime in made:
        await runtime.aclose()


@pytest.fixture(scope="session")
def as_input_ids(tokenizer: ChatTokenizer) -> Callable[[Recording], Recording]:
    """A recording made with ``text``, re-keyed to the ``input_ids`` the server made of it.

    The server tokenized the text with special tokens parsed, with the same tokenizer; the
    recorded ``prompt_tokens`` proves the count. Lets the runtime (which always sends ids)
    replay the text recordings.
    """

    def convert(recording: Recording) -> Recording:
        body = dict(recording.body)
        ids = tokenizer.encode_model_text(body.pop("text"))
        answer = recording.response_json if recording.sse_lines is None else None
        if isinstance(answer, dict):
            assert answer["meta_info"]["prompt_tokens"] == len(ids)
        body["input_ids"] = ids
        return recording.with_body(body, name=f"{recording.name} (as input_ids)")

    return convert
