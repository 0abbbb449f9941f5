"""Options of the ``tim`` graph, and its prompt."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import ToolSpec

from .schema import TaskShape

__all__ = ["TimConfig", "system_prompt"]


class TimConfig(BaseModel):
    """Options of the ``tim`` graph.

    ``max_depth`` and ``max_list_tasks`` bound the field-by-field fallback, where the
    orchestrator asks the model at every list whether to go on (a weak model may never
    stop); they are ours, not the paper's. With one constrained decode the schema (or a
    ``shape``) bounds the structure instead.
    """

    model_config = ConfigDict(extra="forbid")

    #: Tool names offered (``None``: every tool registered through the tool hook).
    tools: list[str] | None = None
    #: Forced top-level tasks (see :class:`TaskShape`); ``None``: the free recursive schema.
    shape: list[TaskShape] | None = None
    #: ``compact``: JSON without optional whitespace (EBNF from xgrammar); ``any``: the schema.
    whitespace: Literal["compact", "any"] = "compact"
    #: ``maxLength`` of every free-text field; ``None``: unbounded.
    max_field_chars: int | None = Field(None, ge=1)
    #: Generated tokens for the whole response.
    max_tokens: int = Field(2048, ge=1)
    #: Fallback: tokens per field request.
    max_field_tokens: int = Field(256, ge=1)
    max_depth: int = Field(3, ge=1)
    max_list_tasks: int = Field(4, ge=1)
    #: TIMRUN's API examples sample at temperature 0.6, top_p 0.95.
    temperature: float = Field(0.6, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    tool_timeout: float | None = Field(30.0, gt=0)
    system_prompt: str | None = None
    default_memory: str = "tim_pruning"


_FORMAT = (
    "Reason by breaking the problem into tasks. Reply with one JSON object: "
    '{"reasoning": [<task>, ...], "answer": "<final answer>"}, where a task is '
    '{"thought": "...", "tooluse": {"tool_name": "...", "parameters": {...}}, '
    '"subtasks": [<task>, ...], "conclusion": "..."}; "tooluse" and "subtasks" are optional. '
    'The runtime adds each tool\'s result to the tooluse as "tool_result".'
)


def system_prompt(config: TimConfig, tools: Sequence[ToolSpec]) -> str:
    """The configured prompt, or the JSON format plus each tool's name, description and
    parameter schema."""
    if config.system_prompt is not None:
        return config.system_prompt
    lines = [_FORMAT]
    if tools:
        lines.append("Tools:")
        lines.extend(
            f"- {t.name}: {t.description} parameters: {json.dumps(t.parameters)}" for t in tools
        )
    return "\n".join(lines)
