"""Turns TIM's streamed JSON into run-graph nodes while it is generated.

A node opens when its value (a task object) or its key (a field) appears and closes when
its value ends, so the run graph mirrors the structure as it grows: ``response`` → ``task``
→ ``thought`` / ``tooluse`` / ``subtasks`` (→ ``task`` …) / ``conclusion``, and ``answer``.
Only paths of TIM's schema count: keys inside a tool's ``parameters`` or ``tool_result``
are data. Nodes keep their span in the document (``attrs.start``/``attrs.end``); a
``subtasks`` span starts at the comma before its key, so removing it leaves valid JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import AnswerAttrs, BudgetExhausted, Node, TaskAttrs, ToolUseAttrs

from .jsonstream import JsonEvent, Path

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["Builder", "ResponseAttrs", "TimAttrs", "TimToolAttrs", "ToolCall", "role_of"]

Role = Literal[
    "task", "subtasks", "thought", "conclusion", "tooluse", "tool_name", "parameters",
    "tool_result", "answer",
]  # fmt: skip


class TimAttrs(TaskAttrs):
    """A task or one of its fields: ``field`` names it, ``level`` is the task depth (top
    tasks are 1), ``start``/``end`` its span in the response document."""

    level: int = 1
    start: int | None = None
    end: int | None = None


class TimToolAttrs(ToolUseAttrs):
    level: int = 1
    start: int | None = None
    end: int | None = None


class ResponseAttrs(BaseModel):
    """The whole TIM response: how it was driven and what its working memory held."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["decode", "fields"] = "decode"
    peak_kv_tokens: int = 0
    reencoded_tokens: list[int] = Field(default_factory=list)


class _Interrupted(BaseException):
    """Closes a node that an error elsewhere interrupted: the node ends cancelled."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A ``tooluse`` whose ``parameters`` closed: the tool can run."""

    node: Node
    name: str
    parameters: Any


def role_of(path: Path) -> Role | None:
    """The TIM role of the value at ``path``, or None for anything else (tool data)."""
    if path == ("answer",):
        return "answer"
    if len(path) < 2 or path[0] != "reasoning" or not isinstance(path[1], int):
        return None
    i = 1
    while True:
        if i + 1 == len(path):
            return "task"
        key, rest = path[i + 1], path[i + 2 :]
        if key == "subtasks":
            if not rest:
                return "subtasks"
            if not isinstance(rest[0], int):
                return None
            i += 2
            continue
        if key in ("thought", "conclusion") and not rest:
            return key  # type: ignore[return-value]
        if key == "tooluse":
            if not rest:
                return "tooluse"
            if len(rest) == 1 and rest[0] in ("tool_name", "parameters", "tool_result"):
                return rest[0]  # type: ignore[return-value]
        return None


class Builder:
    """Opens and closes nodes for parser events (see the module docstring)."""

    def __init__(self, ctx: RunContext, response: Node, document: Any) -> None:
        self._ctx = ctx
        self._response = response
        self._document = document  # a callable returning the document text so far
        self._open: list[tuple[Path, Node, Any]] = []
        self.subtasks_closed: list[Node] = []
        self.tool_calls: list[ToolCall] = []
        #: A ``tooluse`` whose ``"tool_result"`` key was generated: its result goes next.
        self.awaiting_result: Node | None = None

    @property
    def current(self) -> Node | None:
        """The innermost open node (the one a field request generates for)."""
        return self._open[-1][1] if self._open else None

    async def handle(self, events: list[JsonEvent]) -> None:
        """Apply events; closed subtask lists and ready tool calls queue up on the builder."""
        for event in events:
            role = role_of(event.path)
            if role is None:
                continue
            if event.type == "key":
                await self._on_key(role, event)
            elif event.type == "start" and role == "task":
                await self._open_node("task", event.path, event.start, self._parent(event.path))
            elif event.type == "end":
                await self._on_end(role, event)

    async def close_all(self, exc: BaseException | None = None) -> bool:
        """Close every open node, innermost first; True if a node's scope swallowed ``exc``.

        An error is the response's, not the innermost field's: open nodes are closed as
        cancelled (the error reaches the ``response`` node, which records it), while a
        cancellation or a budget stop passes through each scope as it is (a cancelled
        subtree's own scope swallows its cancellation).
        """
        swallowed = False
        while self._open:
            _, _, scope = self._open.pop()
            if exc is None:
                await scope.__aexit__(None, None, None)
            elif isinstance(exc, Exception) and not isinstance(exc, BudgetExhausted):
                interrupted = _Interrupted()
                await scope.__aexit__(_Interrupted, interrupted, None)
            elif await scope.__aexit__(type(exc), exc, exc.__traceback__):
                swallowed, exc = True, None
        return swallowed

    def open_task(self) -> tuple[Path, Node] | None:
        """The innermost open task: its path and node."""
        for path, node, _ in reversed(self._open):
            if node.kind == "task":
                return path, node
        return None

    # -- events ----------------------------------------------------------------------------

    async def _on_key(self, role: Role, event: JsonEvent) -> None:
        if role == "tool_result":
            self.awaiting_result = self._top(event.path[:-1])
        elif role in ("thought", "conclusion", "subtasks", "tooluse", "answer"):
            await self._open_node(role, event.path, event.start, self._parent(event.path))

    async def _on_end(self, role: Role, event: JsonEvent) -> None:
        assert event.end is not None
        raw = self._document()[event.start : event.end]
        if role in ("tool_name", "parameters", "tool_result"):
            node = self._top(event.path[:-1])
            attrs = node.attrs
            assert isinstance(attrs, TimToolAttrs)
            value = json.loads(raw)
            if role == "tool_name":
                attrs.tool_name = value
            elif role == "parameters":
                attrs.parameters = value if isinstance(value, dict) else {"value": value}
                self.tool_calls.append(ToolCall(node, attrs.tool_name, value))
            else:
                attrs.tool_result = value
                self.awaiting_result = None
            return
        node = self._top(event.path)
        if role in ("thought", "conclusion", "answer"):
            value = json.loads(raw)
            # The schema says string; an unconstrained runtime may still write `42`: keep
            # the JSON text rather than crash on a non-string value.
            node.text = value if isinstance(value, str) else raw
        else:
            node.text = raw
        if isinstance(node.attrs, TimAttrs | TimToolAttrs):
            node.attrs.end = event.end
        if role == "answer":
            assert isinstance(node.attrs, AnswerAttrs)
            node.attrs.answer = node.text
            self._ctx.set_answer(node.text, node)
        await self._close(event.path)
        if role == "subtasks":
            self.subtasks_closed.append(node)

    # -- nodes -----------------------------------------------------------------------------

    def _parent(self, path: Path) -> Node:
        """The innermost open node enclosing ``path`` (the response at the top)."""
        for open_path, node, _ in reversed(self._open):
            if path[: len(open_path)] == open_path and path != open_path:
                return node
        return self._response

    def _top(self, path: Path) -> Node:
        open_path, node, _ = self._open[-1]
        if open_path != path:
            raise RuntimeError(f"TIM structure out of step: {path} closes inside {open_path}")
        return node

    async def _open_node(self, role: Role, path: Path, start: int, parent: Node) -> None:
        level = sum(1 for p in path if isinstance(p, int))
        attrs: BaseModel
        if role == "tooluse":
            attrs = TimToolAttrs(tool_name="", level=level, start=start)
        elif role == "answer":
            attrs = AnswerAttrs()
        else:
            attrs = TimAttrs(field=role, level=level, start=start)
        node = self._ctx.add_node(role, [parent], attrs)
        scope = self._ctx.running(node)
        await scope.__aenter__()
        self._open.append((path, node, scope))

    async def _close(self, path: Path) -> None:
        self._top(path)
        _, _, scope = self._open.pop()
        await scope.__aexit__(None, None, None)
