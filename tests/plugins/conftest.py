"""Helpers for the search-strategy and scorer tests."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Node, Orchestrator, RunConfig, RunContext, SearchAttrs
from orchestrator.testing import ScriptedRuntime


@pytest.fixture(scope="module")
def bare() -> Orchestrator:
    """An orchestrator whose runtime is never called: for driving strategies by hand."""
    return Orchestrator(ScriptedRuntime())


def context(orch: Orchestrator, seed: int = 0, **fields: Any) -> RunContext:
    """A fresh run context (question ``q``), as a graph driver would receive it."""
    return orch.prepare("q", RunConfig(seed=seed, **fields)).ctx


def grow(
    ctx: RunContext, parent: Node | str, score: float, *, finished: bool = False, text: str = ""
) -> Node:
    """A scored search node under ``parent``, as the search graph leaves it after a round."""
    node = ctx.add_node("search", [parent], SearchAttrs(finished=finished), text=text)
    node.score = score
    return node
