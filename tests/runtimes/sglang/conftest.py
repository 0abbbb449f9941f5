"""Fixtures for the SGLang runtime tests: recordings, the tokenizer, replay servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.runtimes.sglang.replay import Recording, ReplayServer, load_recordings
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
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    """A replay server with nothing expected; the test adds recordings. Unexpected requests
    fail the test at teardown."""
    async with ReplayServer() as replay:
        yield replay
        replay.assert_clean(all_used=False)
