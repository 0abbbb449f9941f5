"""A live progress line for long runs (nodes, tokens, elapsed), as a lifecycle plugin.

It is an ordinary plugin object: the CLI registers it like any observer, and it reads the
run's budget counters in ``orchestrator_node_end``.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from ._context import RunContext
    from ._graph import Node

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """Shows ``nodes · tokens · elapsed`` on stderr while a run goes, refreshed at most
    ``refresh_per_second`` times (rendering per node would cost more than the nodes)."""

    def __init__(self, *, enabled: bool, refresh_per_second: float = 8.0) -> None:
        self.enabled = enabled
        self._interval = 1.0 / refresh_per_second
        self._last = 0.0
        self._live: Live | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.enabled:
            self._live = Live(Text(""), console=Console(file=sys.stderr), transient=True)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    @hookimpl
    def orchestrator_node_end(self, ctx: RunContext, node: Node) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        usage = ctx.budget.usage
        self._live.update(
            Text(
                f"{ctx.config.graph}: {usage.nodes} nodes · {usage.generated_tokens} tokens · "
                f"{ctx.budget.elapsed:.1f}s"
            )
        )
