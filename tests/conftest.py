"""Shared fixtures: a scripted arithmetic runtime and a custom-graph plugin helper."""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from orchestrator import GraphSpec, RunContext, hookimpl
from orchestrator.testing import ScriptedRuntime


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run the slow tier (also: -m slow)")


def _tier_skips(config: pytest.Config) -> dict[str, pytest.MarkDecorator]:
    """Tiers that cannot or should not run here, each skipped with its reason."""
    skips = {}
    if not (config.getoption("--run-slow") or "slow" in (config.getoption("-m") or "")):
        skips["slow"] = pytest.mark.skip(reason="slow tier: run with --run-slow or -m slow")
    if not _cuda_available():
        skips["gpu"] = pytest.mark.skip(reason="gpu tier: no CUDA device on this machine")
    if not os.environ.get("ORCHESTRATOR_SGLANG_URL"):
        skips["sglang_server"] = pytest.mark.skip(
            reason="sglang_server tier: set ORCHESTRATOR_SGLANG_URL to a running SGLang server"
        )
    return skips


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Async tests run under anyio (asyncio); tiers that can't run here are skipped, saying
    why."""
    skips = _tier_skips(config)
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.anyio)
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


class FnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FnGraph:
    def __init__(self, fn: Callable[[RunContext], Awaitable[str | None]]) -> None:
        self.fn = fn

    async def run(self, ctx: RunContext) -> str | None:
        return await self.fn(ctx)


def graph_plugin(name: str, fn: Callable[[RunContext], Awaitable[str | None]]) -> Any:
    """A plugin object registering ``fn(ctx)`` as graph ``name`` (for executor tests)."""

    class Plugin:
        @hookimpl
        def orchestrator_add_graphs(self) -> list[GraphSpec]:
            return [
                GraphSpec(name=name, factory=lambda _config: FnGraph(fn), config_model=FnConfig)
            ]

    return Plugin()


@pytest.fixture
def arithmetic_runtime() -> ScriptedRuntime:
    """Answers the apple question with four candidate solutions, in turn."""
    return ScriptedRuntime(
        {
            "rules": [
                {
                    "contains": "apples",
                    "outputs": [
                        "3 + 4 = 8\n\n#### 8",
                        "3 + 4 = 7\n\n#### 7",
                        "He has some apples.",
                        "3 + 4 = 7\n\n#### 7",
                    ],
                    "then": "cycle",
                }
            ]
        }
    )
