"""The whole plugin contract.

A plugin is a module (or object) with functions named after these hooks, marked with
:data:`orchestrator.hookimpl`, registered from the ``orchestrator`` entry-point group.
Built-ins register exactly the same way.

Two groups:

- **Registration hooks** (``orchestrator_add_*``) return lists of specs (factories). They are
  called once per plugin when the orchestrator builds its registry; each result is attributed
  to the plugin that returned it. Per-node work (routing, scoring, expanding) then calls the
  objects those factories build, never pluggy.
- **Lifecycle hooks** observe a run: run start/end, node start/end. They are synchronous
  and must be cheap: they run once per node. Return values are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._context import RunContext
    from ._executor import RunResult
    from ._graph import Node
    from ._specs import (
        AttentionBackendSpec,
        CliCommand,
        ComponentSpec,
        GraphSpec,
        RuntimeSpec,
        ToolSpec,
    )

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("orchestrator")
hookimpl = pluggy.HookimplMarker("orchestrator")

# -- registration: runtimes and graphs ---------------------------------------------------


@hookspec
def orchestrator_add_runtimes() -> list[RuntimeSpec]:
    """Register runtime kinds (the ``KIND`` of a ``KIND:TARGET`` runtime spec).

    Fires when the registry is built. Implemented by runtime packages.

    :return: runtime specs; a kind registered twice is an error naming both plugins.
    """


@hookspec
def orchestrator_add_graphs() -> list[GraphSpec]:
    """Register reasoning patterns (``--graph NAME``) and the node kinds they add.

    :return: graph specs.
    """


@hookspec
def orchestrator_add_attention_backends() -> list[AttentionBackendSpec]:
    """Register attention implementations, keyed by runtime kind and backend name.

    :return: attention-backend specs.
    """


# -- registration: per-node components ---------------------------------------------------


@hookspec
def orchestrator_add_strategies() -> list[ComponentSpec]:
    """Register search strategies (:class:`orchestrator.SearchStrategy` factories)."""


@hookspec
def orchestrator_add_scorers() -> list[ComponentSpec]:
    """Register scorers (:class:`orchestrator.Scorer` factories)."""


@hookspec
def orchestrator_add_routers() -> list[ComponentSpec]:
    """Register routers (:class:`orchestrator.Router` factories)."""


@hookspec
def orchestrator_add_memories() -> list[ComponentSpec]:
    """Register memories (:class:`orchestrator.Memory` factories)."""


@hookspec
def orchestrator_add_gates() -> list[ComponentSpec]:
    """Register escalation gates (:class:`orchestrator.Gate` factories)."""


@hookspec
def orchestrator_add_retrievers() -> list[ComponentSpec]:
    """Register retrievers (:class:`orchestrator.Retriever` factories)."""


@hookspec
def orchestrator_add_tools() -> list[ToolSpec]:
    """Register tools models may call (name, JSON-schema parameters, async callable)."""


@hookspec
def orchestrator_add_cli_commands() -> list[CliCommand]:
    """Register subcommands of the ``orchestrator`` CLI (e.g. ``sglang serve``)."""


# -- lifecycle ---------------------------------------------------------------------------


@hookspec
def orchestrator_run_start(ctx: RunContext) -> None:
    """Fires once a run's graph, budget and root node exist, before the graph runs.

    :param ctx: the run's context (config, graph, budget, runtimes).
    """


@hookspec
def orchestrator_run_end(ctx: RunContext, result: RunResult) -> None:
    """Fires after a run ended, however it ended (answer, budget, cancel, error).

    :param result: what the run returns to its caller.
    """


@hookspec
def orchestrator_node_start(ctx: RunContext, node: Node) -> None:
    """Fires when a node starts running (status ``running``)."""


@hookspec
def orchestrator_node_end(ctx: RunContext, node: Node) -> None:
    """Fires when a node reaches a final status (done, failed, cancelled)."""
