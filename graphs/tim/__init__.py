"""TIM / TIMRUN as the ``tim`` graph (arXiv 2507.16784): see :mod:`.graph`."""

from __future__ import annotations

from orchestrator import AnswerAttrs, GraphSpec, hookimpl

from .builder import ResponseAttrs, TimAttrs, TimToolAttrs
from .config import TimConfig
from .graph import TimGraph
from .schema import TaskShape

__all__ = ["TaskShape", "TimConfig", "TimGraph", "orchestrator_add_graphs"]


@hookimpl
def orchestrator_add_graphs() -> list[GraphSpec]:
    return [
        GraphSpec(
            name="tim",
            factory=TimGraph,
            config_model=TimConfig,
            description="TIM: recursive JSON tasks, in-sequence tool calls, subtask pruning",
            node_kinds={
                "response": ResponseAttrs,
                "task": TimAttrs,
                "thought": TimAttrs,
                "subtasks": TimAttrs,
                "conclusion": TimAttrs,
                "tooluse": TimToolAttrs,
                "answer": AnswerAttrs,
            },
        )
    ]
