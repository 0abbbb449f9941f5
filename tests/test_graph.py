"""RunGraph: deterministic ids, typed attributes, JSON round-trip."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from orchestrator import (
    BUILTIN_KINDS,
    GenericAttrs,
    NodeStatus,
    RunGraph,
    SearchAttrs,
    Usage,
)


class CustomAttrs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flavour: str
    weight: float = 1.0


@pytest.fixture
def graph() -> RunGraph:
    return RunGraph({**BUILTIN_KINDS, "custom": CustomAttrs})


def test_ids_derive_from_parent_and_position(graph: RunGraph) -> None:
    root = graph.add("question", text="q")
    a = graph.add("search", (root.id,))
    b = graph.add("search", (root.id,))
    a0 = graph.add("search", (a.id,))
    join = graph.add("summary", (b.id, a0.id))
    assert [n.id for n in graph] == ["r", "r.0", "r.1", "r.0.0", "r.1.0"]
    assert join.depth == 3  # one more than its deepest parent (r.0.0 at depth 2)
    assert [p.id for p in graph.parents(join.id)] == ["r.1", "r.0.0"]
    assert sorted(n.id for n in graph.children("r")) == ["r.0", "r.1"]
    assert [n.id for n in graph.ancestors(a0.id)] == ["r", "r.0"]
    assert sorted(n.id for n in graph.leaves()) == ["r.1.0"]


def test_second_root_gets_its_own_id(graph: RunGraph) -> None:
    assert graph.add("question").id == "r"
    assert graph.add("question").id == "r1"


def test_attrs_must_match_the_registered_kind(graph: RunGraph) -> None:
    root = graph.add("question")
    with pytest.raises(
        TypeError, match="node kind 'thread' takes ThreadAttrs attributes, got SearchAttrs"
    ):
        graph.add("thread", (root.id,), SearchAttrs())


def test_unknown_parent_is_an_error(graph: RunGraph) -> None:
    with pytest.raises(KeyError, match="no node 'nope' in the run graph"):
        graph.add("search", ("nope",))


def test_json_round_trip_is_identical(graph: RunGraph) -> None:
    root = graph.add("question", text="What is 2+2?")
    child = graph.add("search", (root.id,), SearchAttrs(visits=3, value=0.5, answer="4"))
    child.status = NodeStatus.DONE
    child.score = 0.75
    child.token_ids.extend([5, 6, 7])
    child.usage = Usage(prompt_tokens=10, cached_tokens=4, generated_tokens=3)
    custom = graph.add("custom", (child.id,), CustomAttrs(flavour="x"), text="c")
    custom.pruned = True
    graph.add("unregistered", (root.id,), GenericAttrs(anything=[1, 2]))  # type: ignore[call-arg]

    loaded = RunGraph.from_json(graph.to_json(), graph.kinds)

    assert list(loaded) == list(graph)
    assert isinstance(loaded["r.0"].attrs, SearchAttrs)
    assert isinstance(loaded["r.0.0"].attrs, CustomAttrs)
    assert sorted(loaded.nx.edges) == sorted(graph.nx.edges)
    # ids keep growing the same way after a load
    assert loaded.next_child_id(("r",)) == graph.next_child_id(("r",)) == "r.2"


def test_status_final() -> None:
    assert [s.value for s in NodeStatus if s.final] == ["done", "failed", "cancelled"]
