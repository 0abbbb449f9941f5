"""Reasoning as trees: an async orchestrator for LLM reasoning graphs.

The public surface is this module; everything else lives in private modules whose objects
report ``orchestrator`` as their module, so tracebacks and reprs show the public path.
"""

from __future__ import annotations

from ._budget import Budget, BudgetLimits, BudgetUsage
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
from ._graph import Node, NodeStatus, RunGraph
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
    "Grammar",
    "GraphError",
    "GraphSpec",
    "Memory",
    "Node",
    "NodeStatus",
    "OrchestratorError",
    "PluginError",
    "PluginInfo",
    "PluginManager",
    "Prompt",
    "Registry",
    "RequestRejected",
    "Retriever",
    "RunGraph",
    "Router",
    "Runtime",
    "RuntimeFailure",
    "RuntimeSpec",
    "RuntimeUnavailable",
    "SamplingParams",
    "ScoreBatch",
    "ScoreRequest",
    "ScoreResult",
    "Scorer",
    "SearchStrategy",
    "SegmentSpec",
    "SequenceHandle",
    "SupportsSegments",
    "SupportsSequences",
    "ToolSpec",
    "UnknownComponentError",
    "Usage",
    "hookimpl",
]

# Objects report the public module, so reprs and tracebacks show `orchestrator.X`.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
