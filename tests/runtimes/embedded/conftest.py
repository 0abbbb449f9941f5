"""Fixtures for the embedded runtime: a seeded tiny random Llama (with SmolLM2's real
tokenizer) for fast tests, and the real SmolLM2 for the few tests that need it.

Other suites can get a small real runtime the same way::

    from orchestrator.runtimes.embedded import EmbeddedRuntime, tiny_random_model
    rt = EmbeddedRuntime.from_pretrained(str(tiny_random_model(tmp_path, seed=0)))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from orchestrator.runtimes.embedded import EmbeddedRuntime, tiny_random_model

#: Small blocks exercise partial blocks, copies and multi-block prefixes with short prompts.
TEST_OPTIONS: dict[str, Any] = {
    "block_size": 4,
    "kv_cache_bytes": 2**20,
    "max_num_batched_tokens": 64,
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_random_model(tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture
def make_runtime(tiny_model_dir: Path) -> Iterator[Callable[..., EmbeddedRuntime]]:
    """Build tiny runtimes (``TEST_OPTIONS`` overridable); all are closed afterwards."""
    created: list[EmbeddedRuntime] = []

    def make(**options: Any) -> EmbeddedRuntime:
        path = options.pop("path", str(tiny_model_dir))
        runtime = EmbeddedRuntime.from_pretrained(path, **{**TEST_OPTIONS, **options})
        created.append(runtime)
        return runtime

    yield make
    for runtime in created:
        anyio.run(runtime.aclose)


@pytest.fixture
def runtime(make_runtime: Callable[..., EmbeddedRuntime]) -> EmbeddedRuntime:
    return make_runtime()


@pytest.fixture(scope="session")
def smollm2() -> Iterator[EmbeddedRuntime]:
    """The real SmolLM2-135M (dequantized once, then cached under $XDG_CACHE_HOME)."""
    runtime = EmbeddedRuntime.from_pretrained(None, kv_cache_bytes=256 * 2**20)
    yield runtime
    anyio.run(runtime.aclose)
