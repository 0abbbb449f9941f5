"""Reasoning as trees: an async orchestrator for LLM reasoning graphs.

The public surface is this module; everything else lives in private modules whose objects
report ``orchestrator`` as their module, so tracebacks and reprs show the public path.
"""

from __future__ import annotations

import contextlib as _contextlib

from ._budget import Budget, BudgetLimits, BudgetUsage
from ._config import RunConfig, parse_runtime_spec
from ._context import RunContext
from ._exceptions import (
    BudgetExhausted,
    CapabilityMissing,
    ConfigError,
    ContextOverflow,
    GraphError,
    OrchestratorError,
    PluginError,
    RequestRejected,
    RuntimeFailure,
    RuntimeUnavailable,
    UnknownComponentError,
)
from ._executor import Orchestrator, Run, RunResult, StopReason
from ._graph import GenericAttrs, Node, NodeStatus, RunGraph
from ._kinds import (
    BUILTIN_KINDS,
    AnswerAttrs,
    PathAttrs,
    QuestionAttrs,
    SearchAttrs,
    StepAttrs,
    SummaryAttrs,
    TaskAttrs,
    ThreadAttrs,
    ToolUseAttrs,
    WorkerAttrs,
)
from ._plugins import PluginInfo, PluginManager, Registry
from ._protocols import (
    Candidate,
    Document,
    Expansion,
    Gate,
    GateDecision,
    Memory,
    Retriever,
    Router,
    ScoreBatch,
    Scorer,
    SearchStrategy,
)
from ._render import render_tree
from ._runtime import (
    Capability,
    ChatMessage,
    Completion,
    FinishReason,
    GenerateRequest,
    GenerateResult,
    GenerationChunk,
    Grammar,
    Prompt,
    Runtime,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    SegmentSpec,
    SequenceHandle,
    SupportsSegments,
    SupportsSequences,
    Usage,
)
from ._specs import (
    AttentionBackendSpec,
    CliCommand,
    ComponentSpec,
    EmptyConfig,
    GraphSpec,
    RuntimeSpec,
    ToolSpec,
)
from .hookspecs import hookimpl

__all__ = [
    "BUILTIN_KINDS",
    "AnswerAttrs",
    "AttentionBackendSpec",
    "Budget",
    "BudgetExhausted",
    "BudgetLimits",
    "BudgetUsage",
    "Candidate",
    "Capability",
    "CapabilityMissing",
    "ChatMessage",
    "CliCommand",
    "Completion",
    "ComponentSpec",
    "ConfigError",
    "ContextOverflow",
    "Document",
    "EmptyConfig",
    "Expansion",
    "FinishReason",
    "Gate",
    "GateDecision",
    "GenerateRequest",
    "GenerateResult",
    "GenerationChunk",
    "GenericAttrs",
    "Grammar",
    "GraphError",
    "GraphSpec",
    "Memory",
    "Node",
    "NodeStatus",
    "Orchestrator",
    "OrchestratorError",
    "PathAttrs",
    "PluginError",
    "PluginInfo",
    "PluginManager",
    "Prompt",
    "QuestionAttrs",
    "Registry",
    "RequestRejected",
    "Retriever",
    "Router",
    "Run",
    "RunConfig",
    "RunContext",
    "RunGraph",
    "RunResult",
    "Runtime",
    "RuntimeFailure",
    "RuntimeSpec",
    "RuntimeUnavailable",
    "SamplingParams",
    "ScoreBatch",
    "ScoreRequest",
    "ScoreResult",
    "Scorer",
    "SearchAttrs",
    "SearchStrategy",
    "SegmentSpec",
    "SequenceHandle",
    "StepAttrs",
    "StopReason",
    "SummaryAttrs",
    "SupportsSegments",
    "SupportsSequences",
    "TaskAttrs",
    "ThreadAttrs",
    "ToolSpec",
    "ToolUseAttrs",
    "UnknownComponentError",
    "Usage",
    "WorkerAttrs",
    "hookimpl",
    "parse_runtime_spec",
    "render_tree",
]

# Objects report the public module, so reprs and tracebacks show `orchestrator.X`.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        with _contextlib.suppress(AttributeError, TypeError):  # builtins refuse; that's fine
            _obj.__module__ = __name__
del _name, _obj
