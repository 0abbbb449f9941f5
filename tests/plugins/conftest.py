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


DOUBLING = "Tom has 3 apples and buys 4 more, then doubles them. How many apples does he have?"


def tree(result: Any) -> dict[str, tuple[str, float | None, bool, str | None]]:
    """Every search node of a run: ``id -> (text, score, finished, answer)``."""
    return {
        n.id: (n.text, n.score, n.attrs.finished, n.attrs.answer)
        for n in result.graph
        if n.kind == "search"
    }
