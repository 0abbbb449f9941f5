"""The orchestrator: plugins, runtimes, and runs.

``Orchestrator.run`` prepares a :class:`Run` (graph, budget, span, root node) and executes the
graph's driver inside one cancel scope with the wall-clock deadline. Whatever ends the run
(answer, budget, cancel, error), it returns a :class:`RunResult` with the whole graph and
the usage; nodes left unfinished are marked cancelled.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import anyio
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, ConfigDict, Field

from ._budget import BudgetUsage
from ._config import RunConfig, parse_runtime_spec, validate_options
from ._context import RunContext
from ._exceptions import BudgetExhausted, ConfigError
from ._graph import NodeStatus, RunGraph
from ._kinds import BUILTIN_KINDS
from ._plugins import PluginManager
from ._runtime import Runtime
from ._tracing import RunTracer

__all__ = ["Orchestrator", "Run", "RunResult", "StopReason"]

StopReason = Literal["done", "budget", "cancelled", "error"]
DEFAULT_RUNTIME_SPEC = "embedded:smollm2"


class RunResult(BaseModel):
    """What a run returns, however it ended.

    :ivar stop_detail: the budget limit that stopped it (``max_generated_tokens``...), the
        error message, or ``None``.
    :ivar fallbacks: documented fallbacks the run took (e.g. a text join instead of KV reuse).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    run_id: str
    answer: str | None
    answer_node: str | None = None
    graph: RunGraph
    usage: BudgetUsage
    stop_reason: StopReason
    stop_detail: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"graph"})
        data["graph"] = self.graph.to_dict()
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], kinds: Mapping[str, type[BaseModel]] | None = None
    ) -> RunResult:
        fields = dict(data)
        graph = RunGraph.from_dict(fields.pop("graph"), {**BUILTIN_KINDS, **(kinds or {})})
        return cls.model_validate({**fields, "graph": graph})


class Run:
    """One prepared run. ``await run.execute()`` runs it; ``run.cancel()`` (from another
    task) stops it and ``execute`` still returns the partial result."""

    def __init__(self, ctx: RunContext, driver: Any, graph_name: str) -> None:
        self.ctx = ctx
        self._driver = driver
        self._graph_name = graph_name
        self._scope = anyio.CancelScope()
        self._cancelled = False
        self.result: RunResult | None = None

    def cancel(self) -> None:
        self._cancelled = True
        self._scope.cancel()

    async def execute(self) -> RunResult:
        ctx = self.ctx
        hook = ctx.plugins.hook
        ctx.tracer.start_run(self._graph_name, {"orchestrator.seed": ctx.config.seed})
        hook.orchestrator_run_start(ctx=ctx)
        stop: StopReason = "done"
        detail: str | None = None
        deadline = ctx.config.budget.max_wall_seconds
        try:
            with self._scope:
                with anyio.move_on_after(deadline) as timer:
                    answer = await self._driver.run(ctx)
                    if answer is not None or ctx.answer is None:
                        ctx.answer = answer
                if timer.cancelled_caught:
                    stop, detail = "budget", "max_wall_seconds"
            if self._cancelled:
                stop = "cancelled"
            elif stop == "done" and ctx.stopped_by is not None:
                stop, detail = "budget", ctx.stopped_by.limit
        except Exception as exc:
            cause = _first_leaf(exc)
            if isinstance(cause, BudgetExhausted):
                stop, detail = "budget", cause.limit
            else:
                stop, detail = "error", f"{type(cause).__name__}: {cause}"
                ctx.meta["error_type"] = type(cause).__name__
        finally:
            with anyio.CancelScope(shield=True):
                for node in ctx.graph:
                    if not node.status.final:
                        node.status = NodeStatus.CANCELLED
                ctx.tracer.close_open_spans()
        result = RunResult(
            run_id=ctx.run_id,
            answer=ctx.answer,
            answer_node=ctx.answer_node,
            graph=ctx.graph,
            usage=ctx.budget.snapshot(),
            stop_reason=stop,
            stop_detail=detail,
            fallbacks=list(ctx.fallbacks),
            meta=dict(ctx.meta),
        )
        ctx.tracer.end_run(
            stop,
            detail if stop == "error" else None,
            {
                "orchestrator.usage.generated_tokens": result.usage.generated_tokens,
                "orchestrator.usage.nodes": result.usage.nodes,
            },
        )
        hook.orchestrator_run_end(ctx=ctx, result=result)
        self.result = result
        return result


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class Orchestrator:
    """Plugins, runtimes and the entry point of runs.

    :param runtimes: named runtimes, a single runtime (named ``default``), or runtime specs
        (``{"main": "embedded:smollm2"}``) built through the runtime hook. ``None``: the
        default runtime spec, built on first use.
    :param plugins: extra plugin objects or dotted module names to register.
    :param autoload: load third-party entry points (default: unless
        ``ORCHESTRATOR_DISABLE_PLUGIN_AUTOLOAD=1``).
    :param blocked: plugin names never to load.
    :param tracer_provider: where spans go (default: the global provider).
    """

    def __init__(
        self,
        runtimes: Mapping[str, Runtime | str] | Runtime | None = None,
        *,
        plugins: Sequence[object | str] = (),
        autoload: bool | None = None,
        allow: Iterable[str] | None = None,
        blocked: Iterable[str] = (),
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.plugin_manager = PluginManager()
        for name in blocked:
            self.plugin_manager.set_blocked(name)
        for plugin in plugins:
            if isinstance(plugin, str):
                self.plugin_manager.import_plugin(plugin)
            else:
                self.plugin_manager.register(plugin)
        self.plugin_manager.load_entrypoints(autoload=autoload, allow=allow, blocked=blocked)
        self.tracer_provider = tracer_provider
        if runtimes is None:
            runtimes = {"default": DEFAULT_RUNTIME_SPEC}
        elif not isinstance(runtimes, Mapping):
            runtimes = {"default": runtimes}
        self._runtime_specs = dict(runtimes)
        self._runtimes: dict[str, Runtime] = {}
        self._owned: list[Runtime] = []
        self._run_counter = itertools.count()

    @property
    def registry(self) -> Any:
        return self.plugin_manager.registry

    def runtimes(self) -> dict[str, Runtime]:
        """The runtimes by name; specs are built (through the runtime hook) on first call."""
        for name, value in self._runtime_specs.items():
            if name in self._runtimes:
                continue
            if isinstance(value, str):
                kind, target, options = parse_runtime_spec(value)
                spec = self.registry.get("runtime", kind)
                runtime = spec.factory(target, options)
                self._owned.append(runtime)
            else:
                runtime = value
            self._runtimes[name] = runtime
        return self._runtimes

    def prepare(self, question: str, config: RunConfig | None = None, **fields: Any) -> Run:
        """Validate everything a run needs and return it, not yet started.

        :raises ConfigError: for an invalid config or component options (naming the field).
        :raises UnknownComponentError: for a graph or component nobody registered.
        """
        if config is None:
            config = RunConfig.build(**fields)
        elif fields:
            config = RunConfig.build(**{**config.model_dump(), **fields})
        registry = self.registry
        graph_spec = registry.get("graph", config.graph)
        graph_config = validate_options(graph_spec.config_model, config.graph_options, "graph")
        for category in ("strategy", "scorer", "router", "memory", "gate"):
            # A graph names its defaults as `default_<category>` fields of its config.
            name = getattr(config, category) or getattr(graph_config, f"default_{category}", None)
            options = getattr(config, f"{category}_options")
            if name is not None:
                spec = registry.get(category, name)
                validate_options(spec.config_model, options, category)
            elif options:
                raise ConfigError(
                    f"options given, but graph {config.graph!r} uses no {category}",
                    field=category,
                )
        runtimes = self.runtimes()
        if config.runtime is not None and config.runtime not in runtimes:
            raise ConfigError(
                f"no runtime named {config.runtime!r} (have: {', '.join(runtimes)})",
                field="runtime",
            )
        run_id = f"{uuid.uuid4().hex[:12]}-{next(self._run_counter)}"
        kinds = {**BUILTIN_KINDS, **graph_spec.node_kinds}
        ctx = RunContext(
            run_id=run_id,
            question=question,
            config=config,
            graph=RunGraph(kinds),
            runtimes=runtimes,
            plugins=self.plugin_manager,
            tracer=RunTracer(self.tracer_provider, run_id),
        )
        return Run(ctx, graph_spec.factory(graph_config), config.graph)

    async def run(self, question: str, config: RunConfig | None = None, **fields: Any) -> RunResult:
        """Run ``question`` through the configured graph; see :meth:`prepare` for errors."""
        return await self.prepare(question, config, **fields).execute()

    async def aclose(self) -> None:
        """Close the runtimes this orchestrator built from specs (not ones passed in)."""
        with anyio.CancelScope(shield=True):
            for runtime in self._owned:
                await runtime.aclose()
        self._owned.clear()
        self._runtimes.clear()

    async def __aenter__(self) -> Orchestrator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
