"""TIM's output schema: ``{reasoning: [Task], answer}``, ``Task = {thought, tooluse?,
subtasks?: [Task], conclusion}`` (the paper's Figure 2, as methods.md §1 restates it; field
order is generation order).

``ToolUse = {tool_name, parameters, tool_result}``: one variant per tool (``anyOf``), so the
grammar constrains ``parameters`` to the chosen tool's own JSON schema; ``tool_result`` is any
JSON object and is never generated — the runtime injects it (a tool result is "a dumped JSON
dictionary string"). The recursive schema uses ``$defs``/``$ref``, which xgrammar compiles.

A :class:`TaskShape` forces the tree's shape, like the official SDK's
``create_task(subtasks=Tuple[...])``: a task with ``subtasks=[...]`` must spawn exactly those
subtasks, one with ``tool="name"`` must call that tool, and ``subtasks=None``/``tool=None``
forbid them (used for the forced three-level task of the tests and the benchmark).

A forced ``subtasks`` member is exact when present but *optional in the grammar*: pruning
removes whole ``subtasks`` members from the live sequence, and a runtime that carries the
grammar matcher on its handle replays it over what remains (the embedded runtime), which
must still be valid. The single-decode driver inserts a forced list the model skipped
(:func:`shape_at` tells it which tasks must have one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from orchestrator import Grammar, ToolSpec

__all__ = [
    "TaskShape",
    "document_schema",
    "grammar_for",
    "shape_at",
    "string_schema",
    "tool_use_schema",
]


class TaskShape(BaseModel):
    """The forced shape of one task (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    subtasks: list[TaskShape] | None = None
    tool: str | None = None


def string_schema(max_chars: int | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if max_chars is not None:
        schema["maxLength"] = max_chars
    return schema


def tool_use_schema(tool: ToolSpec) -> dict[str, Any]:
    """The ``tooluse`` object for one tool; ``tool_result`` is injected, never generated."""
    return {
        "type": "object",
        "properties": {
            "tool_name": {"const": tool.name},
            "parameters": tool.parameters,
            "tool_result": {"type": "object"},
        },
        "required": ["tool_name", "parameters", "tool_result"],
        "additionalProperties": False,
    }


def _task(properties: Mapping[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
    }


def _free_task(tools: Sequence[ToolSpec], max_chars: int | None) -> dict[str, Any]:
    properties: dict[str, Any] = {"thought": string_schema(max_chars)}
    if tools:
        uses = [tool_use_schema(t) for t in tools]
        properties["tooluse"] = uses[0] if len(uses) == 1 else {"anyOf": uses}
    properties["subtasks"] = {"type": "array", "items": {"$ref": "#/$defs/Task"}}
    properties["conclusion"] = string_schema(max_chars)
    return _task(properties, ["thought", "conclusion"])


def _shaped_task(
    shape: TaskShape, tools: Mapping[str, ToolSpec], max_chars: int | None
) -> dict[str, Any]:
    properties: dict[str, Any] = {"thought": string_schema(max_chars)}
    required = ["thought"]
    if shape.tool is not None:
        properties["tooluse"] = tool_use_schema(tools[shape.tool])
        required.append("tooluse")
    if shape.subtasks is not None:
        # Optional in the grammar (see the module docstring); the list itself is exact.
        properties["subtasks"] = _fixed_array(
            [_shaped_task(s, tools, max_chars) for s in shape.subtasks]
        )
    properties["conclusion"] = string_schema(max_chars)
    required.append("conclusion")
    return _task(properties, required)


def _fixed_array(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "array",
        "prefixItems": items,
        "items": False,
        "minItems": len(items),
        "maxItems": len(items),
    }


def document_schema(
    tools: Sequence[ToolSpec],
    *,
    shape: Sequence[TaskShape] | None = None,
    max_chars: int | None = None,
) -> dict[str, Any]:
    """The whole response's schema: recursive, or forced to ``shape`` (top-level tasks).

    :raises KeyError: if ``shape`` names a tool not in ``tools``.
    """
    by_name = {t.name: t for t in tools}
    if shape is None:
        reasoning: dict[str, Any] = {"type": "array", "items": {"$ref": "#/$defs/Task"}}
        defs: dict[str, Any] | None = {"Task": _free_task(tools, max_chars)}
    else:
        reasoning = _fixed_array([_shaped_task(s, by_name, max_chars) for s in shape])
        defs = None
    schema = _task(
        {"reasoning": reasoning, "answer": string_schema(max_chars)}, ["reasoning", "answer"]
    )
    if defs is not None:
        schema["$defs"] = defs
    return schema


def grammar_for(schema: dict[str, Any], whitespace: Literal["compact", "any"]) -> Grammar:
    """The decoding constraint for ``schema``.

    ``compact``: xgrammar's own translation of the schema with ``any_whitespace=False``
    (separators ``", "`` and ``": "``, as ``json.dumps`` writes them), handed to the runtime
    as EBNF — a JSON-schema constraint lets a small model pad with whitespace forever, and
    runtimes compile schemas with their own whitespace default. ``any``: the schema itself.
    """
    if whitespace == "any":
        return Grammar(json_schema=schema)
    import xgrammar  # lazily: importing it costs half a second at plugin loading

    compiled = xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
    return Grammar(ebnf=str(compiled))


def shape_at(shape: Sequence[TaskShape] | None, path: Sequence[str | int]) -> TaskShape | None:
    """The forced shape of the task at ``path`` (``("reasoning", 0, "subtasks", 1)``), or
    None without a shape."""
    if shape is None:
        return None
    tasks: Sequence[TaskShape] | None = shape
    found: TaskShape | None = None
    for part in path:
        if isinstance(part, int):
            if tasks is None or part >= len(tasks):
                return None
            found = tasks[part]
            tasks = found.subtasks
    return found
