"""Shared fixtures: a scripted arithmetic runtime and a custom-graph plugin helper."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from orchestrator import GraphSpec, RunContext, hookimpl
from orchestrator.testing import ScriptedRuntime


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every ``async def`` test runs under anyio (asyncio backend)."""
    for item in items:
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            item.add_marker(pytest.mark.anyio)


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
