"""Attribute models of the built-in node kinds.

Graphs that add kinds register their models through ``orchestrator_add_graphs`` (the
``GraphSpec.node_kinds`` field); these are the kinds the built-in graphs share.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BUILTIN_KINDS"]


class _Attrs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuestionAttrs(_Attrs):
    """The root of a run: the user's question (data, never parsed for structure)."""

    reference: str | None = None


class AnswerAttrs(_Attrs):
    answer: str | None = None
    source_node: str | None = None


class SearchAttrs(_Attrs):
    """A search-tree node: one step or one whole candidate solution."""

    visits: int = 0
    value: float = 0.0
    prior: float | None = None
    finished: bool = False
    answer: str | None = None
    #: Strategy-specific numbers (f, g, h for A*; weight for particle filtering).
    stats: dict[str, float] = Field(default_factory=dict)


class TaskAttrs(_Attrs):
    """TIM: one task of the recursive structure; children are its fields."""

    field: str | None = None


class ToolUseAttrs(_Attrs):
    tool_name: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    tool_result: Any = None


class ThreadAttrs(_Attrs):
    """ThreadWeaver: an outline entry or a thread, with its outline number (``1``, ``1.2``)."""

    number: str
    block: int = 0
    force_closed: bool = False


class PathAttrs(_Attrs):
    """ParaThinker: one isolated path and the position offset it starts at."""

    index: int
    position_offset: int = 0


class SummaryAttrs(_Attrs):
    """ParaThinker: the join that reads every path (its parents)."""

    position_offset: int = 0
    reprefilled_tokens: int = 0


class WorkerAttrs(_Attrs):
    """Hogwild!: a worker and its name in the prompt (``Alice``)."""

    worker: int
    name: str


class StepAttrs(_Attrs):
    """Hogwild!: a finished step of one worker, moved into the common history."""

    worker: int
    step: int


BUILTIN_KINDS: MappingProxyType[str, type[BaseModel]] = MappingProxyType(
    {
        "question": QuestionAttrs,
        "answer": AnswerAttrs,
        "search": SearchAttrs,
        "task": TaskAttrs,
        "thought": TaskAttrs,
        "subtasks": TaskAttrs,
        "conclusion": TaskAttrs,
        "tooluse": ToolUseAttrs,
        "outline": ThreadAttrs,
        "thread": ThreadAttrs,
        "path": PathAttrs,
        "summary": SummaryAttrs,
        "worker": WorkerAttrs,
        "step": StepAttrs,
    }
)
