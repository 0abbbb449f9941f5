"""The run graph: typed nodes in a networkx ``DiGraph``, with a JSON round-trip.

A node's ``kind`` is a string; its kind-specific attributes are a pydantic model registered
for that kind (built-ins in :mod:`orchestrator._kinds`, others through the graph hook).
Node ids are deterministic: a child's id is its first parent's id plus its position among
that parent's children, so the same run grows the same ids.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from typing import Any

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from ._runtime import Usage

__all__ = ["Node", "NodeStatus", "RunGraph"]


class NodeStatus(enum.StrEnum):
    """Where a node is in its life. Every node of a finished run is in a final state."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (NodeStatus.PENDING, NodeStatus.RUNNING)


class Node(BaseModel):
    """One unit of reasoning: a generation, a join, a tool call, a search state.

    ``attrs`` is the kind's attribute model (``GenericAttrs`` for unregistered kinds).
    Timings are seconds since the run started. ``pruned`` marks content removed from the
    working memory (TIM) but kept in the record.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    id: str
    kind: str
    parent_ids: tuple[str, ...] = ()
    depth: int = 0
    text: str = ""
    token_ids: list[int] = Field(default_factory=list)
    status: NodeStatus = NodeStatus.PENDING
    score: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    runtime: str | None = None
    model: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    pruned: bool = False
    attrs: SerializeAsAny[BaseModel] | None = None


class GenericAttrs(BaseModel):
    """Attributes of a kind nobody registered a model for: any JSON object."""

    model_config = ConfigDict(extra="allow")


class RunGraph:
    """The typed view over the networkx graph of one run.

    Nodes are kept in insertion order in a dict (O(1) lookups, children lists) and mirrored
    into the networkx ``DiGraph`` (node attribute ``node``) when :attr:`nx` is read: adding a
    node is on the executor's hot path, and networkx's bookkeeping was a third of its cost.

    :param kinds: attribute model per node kind, used to validate ``attrs`` and to load JSON.
    """

    def __init__(self, kinds: Mapping[str, type[BaseModel]] | None = None) -> None:
        self._nx: nx.DiGraph[str] = nx.DiGraph()
        self._nodes: dict[str, Node] = {}
        self._children: dict[str, list[str]] = {}
        self._unsynced: list[Node] = []
        self.kinds: dict[str, type[BaseModel]] = dict(kinds or {})
        self._num_children: dict[str, int] = {}

    @property
    def nx(self) -> nx.DiGraph[str]:
        """The networkx graph (node ids; each node's data ``node`` is its :class:`Node`)."""
        if self._unsynced:
            pending, self._unsynced = self._unsynced, []
            for node in pending:
                self._nx.add_node(node.id, node=node)
                for parent in node.parent_ids:
                    self._nx.add_edge(parent, node.id)
        return self._nx

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes.values()))

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __getitem__(self, node_id: str) -> Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in the run graph") from None

    def depth_below(self, parent_ids: tuple[str, ...]) -> int:
        """The depth a child of ``parent_ids`` gets: one more than its deepest parent."""
        depth = 0
        for parent in parent_ids:
            parent_depth = self[parent].depth + 1
            if parent_depth > depth:
                depth = parent_depth
        return depth

    def next_child_id(self, parent_ids: tuple[str, ...]) -> str:
        """The id the next child of ``parent_ids`` will get (deterministic)."""
        if not parent_ids:
            count = self._num_children.get("", 0)
            return "r" if count == 0 else f"r{count}"
        first = parent_ids[0]
        return f"{first}.{self._num_children.get(first, 0)}"

    def add(
        self,
        kind: str,
        parent_ids: tuple[str, ...] = (),
        attrs: BaseModel | None = None,
        *,
        depth: int | None = None,
        **fields: Any,
    ) -> Node:
        """Create a node under ``parent_ids`` and return it (``depth`` if already computed).

        :raises KeyError: if a parent is not in the graph.
        :raises TypeError: if ``attrs`` is not the model registered for ``kind``.
        """
        expected = self.kinds.get(kind)
        if attrs is not None and expected is not None and not isinstance(attrs, expected):
            raise TypeError(
                f"node kind {kind!r} takes {expected.__name__} attributes, "
                f"got {type(attrs).__name__}"
            )
        if depth is None:
            depth = self.depth_below(parent_ids)
        node_id = self.next_child_id(parent_ids)
        key = parent_ids[0] if parent_ids else ""
        self._num_children[key] = self._num_children.get(key, 0) + 1
        values = _node_defaults()
        if fields:
            values.update(fields)
        values["id"] = node_id
        values["kind"] = kind
        values["parent_ids"] = parent_ids
        values["depth"] = depth
        values["attrs"] = attrs
        node = _new_node(values)
        self._insert(node)
        return node

    def _insert(self, node: Node) -> None:
        nodes = self._nodes
        for parent in node.parent_ids:
            if parent not in nodes:
                raise KeyError(f"no node {parent!r} in the run graph")
            self._children[parent].append(node.id)
        nodes[node.id] = node
        self._children[node.id] = []
        self._unsynced.append(node)

    def children(self, node_id: str) -> list[Node]:
        """Children in creation order."""
        return [self._nodes[c] for c in self._children[node_id]]

    def parents(self, node_id: str) -> list[Node]:
        return [self[p] for p in self[node_id].parent_ids]

    def descendants(self, node_id: str) -> list[Node]:
        return [self[d] for d in nx.descendants(self.nx, node_id)]

    def ancestors(self, node_id: str) -> list[Node]:
        """Ancestors from the root down to the node's first parent (first-parent chain)."""
        chain: list[Node] = []
        node = self[node_id]
        while node.parent_ids:
            node = self[node.parent_ids[0]]
            chain.append(node)
        chain.reverse()
        return chain

    def roots(self) -> list[Node]:
        return [n for n in self._nodes.values() if not n.parent_ids]

    def leaves(self) -> list[Node]:
        return [n for n in self._nodes.values() if not self._children[n.id]]

    # -- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [n.model_dump(mode="json") for n in self]}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], kinds: Mapping[str, type[BaseModel]] | None = None
    ) -> RunGraph:
        """Rebuild a graph saved with :meth:`to_dict`; ``attrs`` come back as their models."""
        graph = cls(kinds)
        for raw in data["nodes"]:
            raw = dict(raw)
            attrs = raw.pop("attrs", None)
            model = graph.kinds.get(raw["kind"], GenericAttrs)
            node = Node.model_validate({**raw, "attrs": None})
            if attrs is not None:
                node.attrs = model.model_validate(attrs)
            graph._insert(node)
            key = node.parent_ids[0] if node.parent_ids else ""
            graph._num_children[key] = graph._num_children.get(key, 0) + 1
        return graph

    @classmethod
    def from_json(cls, text: str, kinds: Mapping[str, type[BaseModel]] | None = None) -> RunGraph:
        return cls.from_dict(json.loads(text), kinds)


def _node_defaults() -> dict[str, Any]:
    # Mutable defaults must be fresh per node; Usage is frozen, so one zero is shared.
    return {
        "text": "",
        "token_ids": [],
        "status": NodeStatus.PENDING,
        "score": None,
        "scores": {},
        "usage": _ZERO_USAGE,
        "runtime": None,
        "model": None,
        "started_at": None,
        "ended_at": None,
        "error": None,
        "pruned": False,
    }


_ZERO_USAGE = Usage()
_FIELDS_SET = frozenset({"id", "kind", "parent_ids", "depth", "attrs"})


def _new_node(values: dict[str, Any]) -> Node:
    """Build a node without validation: the hot path of the executor (10k+ nodes per run,
    all fields built here from validated parts). Equivalent to ``Node.model_construct``
    with every field given, at a third of its cost."""
    node = Node.__new__(Node)
    object.__setattr__(node, "__dict__", values)
    object.__setattr__(node, "__pydantic_fields_set__", set(_FIELDS_SET))
    object.__setattr__(node, "__pydantic_extra__", None)
    object.__setattr__(node, "__pydantic_private__", None)
    return node
