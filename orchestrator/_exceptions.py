"""The orchestrator's exceptions.

One root, so ``except OrchestratorError`` catches everything we raise::

    OrchestratorError
    ├── ConfigError                 a config, CLI option or runtime spec is invalid
    ├── PluginError                 a plugin failed to load or registered something invalid
    │   └── UnknownComponentError   a graph/strategy/scorer/... name nobody registered
    ├── BudgetExhausted             a run limit (tokens, calls, nodes, depth, time) is reached
    ├── RuntimeFailure              a runtime could not serve a request
    │   ├── RuntimeUnavailable      the runtime (server, process) is down or not reachable
    │   ├── RequestRejected         the runtime refused the request (bad parameters)
    │   └── CapabilityMissing       a graph asked for an operation the runtime does not offer
    ├── ContextOverflow             a prompt is longer than the model's context
    └── GraphError                  a reasoning graph met output it cannot continue from

Foreign errors (httpx, torch) are translated at exactly one boundary, in the runtime that
called them, with ``raise Ours(...) from exc``: the cause is never hidden.
"""

from __future__ import annotations

__all__ = [
    "BudgetExhausted",
    "CapabilityMissing",
    "ConfigError",
    "ContextOverflow",
    "GraphError",
    "OrchestratorError",
    "PluginError",
    "RequestRejected",
    "RuntimeFailure",
    "RuntimeUnavailable",
    "UnknownComponentError",
]


class OrchestratorError(Exception):
    """Root of every error the orchestrator raises."""


class ConfigError(OrchestratorError, ValueError):
    """Raised when a config, CLI option or runtime spec is invalid; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class PluginError(OrchestratorError):
    """Raised when a plugin fails to import or registers something invalid.

    ``plugin`` names the plugin; ``hook`` the hook it was answering, when known.
    """

    def __init__(self, message: str, *, plugin: str, hook: str | None = None) -> None:
        self.plugin = plugin
        self.hook = hook
        where = f' in hook "{hook}"' if hook else ""
        super().__init__(f'plugin "{plugin}"{where}: {message}')


class UnknownComponentError(PluginError, KeyError):
    """Raised when a graph, strategy, scorer, runtime kind... is asked for by a name nobody
    registered. The message lists the names that are registered."""

    def __init__(self, category: str, name: str, known: list[str]) -> None:
        self.category = category
        self.name = name
        self.known = sorted(known)
        listing = ", ".join(self.known) or "none"
        OrchestratorError.__init__(self, f"unknown {category} {name!r} (registered: {listing})")
        self.plugin = name
        self.hook = None

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class BudgetExhausted(OrchestratorError):
    """Raised when a run limit is reached; ``limit`` is the field of :class:`BudgetLimits`."""

    def __init__(self, limit: str, used: float, maximum: float) -> None:
        self.limit = limit
        self.used = used
        self.maximum = maximum
        super().__init__(f"budget {limit} exhausted ({used:g} of {maximum:g})")


class RuntimeFailure(OrchestratorError):
    """Raised when a runtime could not serve a request; ``runtime`` names it."""

    def __init__(self, message: str, *, runtime: str, request: object | None = None) -> None:
        self.runtime = runtime
        self.request = request
        super().__init__(f"runtime {runtime!r}: {message}")


class RuntimeUnavailable(RuntimeFailure):
    """Raised when the runtime is down, not started, or not reachable."""


class RequestRejected(RuntimeFailure):
    """Raised when the runtime refused a request (invalid parameters, HTTP 4xx)."""

    def __init__(
        self,
        message: str,
        *,
        runtime: str,
        request: object | None = None,
        status: int | None = None,
    ) -> None:
        self.status = status
        super().__init__(message, runtime=runtime, request=request)


class CapabilityMissing(RuntimeFailure):
    """Raised when a graph calls an optional runtime operation the runtime does not declare."""

    def __init__(self, capability: str, *, runtime: str) -> None:
        self.capability = capability
        super().__init__(f"does not support {capability}", runtime=runtime)


class ContextOverflow(OrchestratorError, ValueError):
    """Raised when a prompt (plus the tokens to generate) exceeds the model's context."""

    def __init__(self, num_tokens: int, max_tokens: int) -> None:
        self.num_tokens = num_tokens
        self.max_tokens = max_tokens
        super().__init__(
            f"prompt of {num_tokens} tokens exceeds the model's context of {max_tokens} tokens"
        )


class GraphError(OrchestratorError):
    """Raised when a reasoning graph meets output it cannot continue from."""

    def __init__(self, message: str, *, graph: str, node_id: str | None = None) -> None:
        self.graph = graph
        self.node_id = node_id
        where = f" at node {node_id}" if node_id else ""
        super().__init__(f"graph {graph!r}{where}: {message}")
