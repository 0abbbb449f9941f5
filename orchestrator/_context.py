"""The run context: what a graph driver and its plugins use to grow and run the tree.

Everything a node does goes through here, so budgets, hooks, traces and cancellation are
enforced in one place: ``ctx.add_node`` + ``async with ctx.running(node)`` give a node its
lifecycle; ``ctx.generate`` and ``ctx.score`` are the only ways to spend tokens and scorer
calls. Graph drivers own their task groups (``anyio.create_task_group()``) inside the run's
scope, so no task outlives its run.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
from opentelemetry.trace import Span
from pydantic import BaseModel

from ._budget import Budget
from ._config import RunConfig, validate_options
from ._exceptions import BudgetExhausted, ConfigError
from ._graph import Node, NodeStatus, RunGraph
from ._plugins import PluginManager
from ._protocols import ScoreBatch, Scorer
from ._runtime import (
    Capability,
    Completion,
    GenerateRequest,
    GenerateResult,
    Runtime,
    SamplingParams,
    SequenceHandle,
    Usage,
)
from ._tracing import RunTracer

__all__ = ["RunContext"]


@dataclass
class _Partial:
    """Tokens streamed so far by an in-flight call, kept if the call is cancelled."""

    token_ids: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


class RunContext:
    """One run's state and services. Created by :meth:`Orchestrator.run`; graphs receive it.

    :ivar question: the user's question (data: never parsed for structure).
    :ivar graph: the run graph; ``root`` is its question node.
    :ivar budget: limits and counters, checked before every runtime and scorer call.
    :ivar runtimes: the orchestrator's runtimes by name.
    """

    def __init__(
        self,
        *,
        run_id: str,
        question: str,
        config: RunConfig,
        graph: RunGraph,
        runtimes: Mapping[str, Runtime],
        plugins: PluginManager,
        tracer: RunTracer,
    ) -> None:
        self.run_id = run_id
        self.question = question
        self.config = config
        self.graph = graph
        self.runtimes = runtimes
        self.plugins = plugins
        self.budget = Budget(config.budget)
        self.tracer = tracer
        self.fallbacks: list[str] = []
        self.meta: dict[str, Any] = {}
        self.answer: str | None = None
        self.answer_node: str | None = None
        #: Set by a graph that caught a budget exhaustion and finished gracefully.
        self.stopped_by: BudgetExhausted | None = None
        self._limiter = anyio.CapacityLimiter(config.max_concurrency)
        self._settled = anyio.Event()  # set (and replaced) whenever a reservation settles
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._components: dict[str, Any] = {}
        hook = plugins.hook
        # Lifecycle hooks run per node: skip the call entirely when nobody implements them.
        self._node_start = (
            hook.orchestrator_node_start if hook.orchestrator_node_start.get_hookimpls() else None
        )
        self._node_end = (
            hook.orchestrator_node_end if hook.orchestrator_node_end.get_hookimpls() else None
        )
        self.root = self.add_node("question", text=question)
        self.root.status = NodeStatus.DONE  # the question exists; nothing runs on it
        self.root.started_at = self.root.ended_at = 0.0

    # -- components ---------------------------------------------------------------------

    @property
    def default_runtime(self) -> str:
        """The runtime name used when neither a router nor the caller picks one."""
        if self.config.runtime is not None:
            return self.config.runtime
        return next(iter(self.runtimes))

    def runtime(self, name: str | None = None) -> Runtime:
        """:raises ConfigError: if no runtime has that name."""
        name = name or self.default_runtime
        try:
            return self.runtimes[name]
        except KeyError:
            known = ", ".join(self.runtimes) or "none"
            raise ConfigError(
                f"no runtime named {name!r} (have: {known})", field="runtime"
            ) from None

    def component(self, category: str, default: str | None = None) -> Any:
        """The run's ``category`` component (``strategy``, ``scorer``, ``router``, ``memory``,
        ``gate``), built once per run from the name in the config or ``default``; ``None``
        when neither names one.

        :raises UnknownComponentError: if the name is not registered.
        :raises ConfigError: if its options do not validate (naming the field).
        """
        if category in self._components:
            return self._components[category]
        name = getattr(self.config, category) or default
        if name is None:
            self._components[category] = None
            return None
        spec = self.plugins.registry.get(category, name)
        options = getattr(self.config, f"{category}_options")
        config = validate_options(spec.config_model, options, category)
        instance = spec.factory(config)
        self._components[category] = instance
        return instance

    def build(self, category: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """Build any registered component by name (e.g. a second scorer, a retriever)."""
        spec = self.plugins.registry.get(category, name)
        config = validate_options(spec.config_model, options or {}, f"{category}:{name}")
        return spec.factory(config)

    @contextlib.contextmanager
    def stage(self, config: RunConfig) -> Iterator[None]:
        """Within the block, the run's config is ``config`` and its components are built
        afresh from it; both are restored after. The graph, budget, runtimes and answer are
        the run's. For a graph that runs other graphs as stages (the ``cascade`` graph's fast
        and slow tiers), each with its own strategy, scorer, router and memory. Stages run one
        at a time: a task running concurrently outside the block would see the stage's config.
        """
        saved = self.config, self._components
        self.config, self._components = config, {}
        try:
            yield
        finally:
            self.config, self._components = saved

    def seed_for(self, node_id: str, index: int = 0) -> int:
        """A per-request seed derived from the run seed, the node and the sample index, so
        the same run asks the same questions with the same seeds whatever the scheduling."""
        digest = hashlib.blake2b(
            f"{self.config.seed}:{node_id}:{index}".encode(), digest_size=4
        ).digest()
        return int.from_bytes(digest, "little") & 0x7FFFFFFF

    def report_fallback(self, what: str) -> None:
        """Record that the run took a documented fallback (e.g. text join instead of KV)."""
        if what not in self.fallbacks:
            self.fallbacks.append(what)

    def set_answer(self, answer: str | None, node: Node | None = None) -> None:
        """The run's answer so far; kept if the run is later stopped by budget or cancel."""
        self.answer = answer
        self.answer_node = node.id if node is not None else None

    # -- nodes ---------------------------------------------------------------------------

    def add_node(
        self,
        kind: str,
        parents: Sequence[Node | str] = (),
        attrs: BaseModel | None = None,
        **fields: Any,
    ) -> Node:
        """Create a pending node under ``parents``.

        :raises BudgetExhausted: if the node or depth limit is reached.
        """
        if len(parents) == 1:  # the common case, kept cheap: this runs once per node
            only = parents[0]
            parent_ids: tuple[str, ...] = (only if isinstance(only, str) else only.id,)
        else:
            parent_ids = tuple(p if isinstance(p, str) else p.id for p in parents)
        depth = self.graph.depth_below(parent_ids)
        self.budget.charge_node(depth)
        return self.graph.add(kind, parent_ids, attrs, depth=depth, **fields)

    def running(self, node: Node) -> _NodeScope:
        """``async with ctx.running(node):`` runs a node's body with its lifecycle: status,
        timings, hooks, span, and a cancel scope that :meth:`cancel_subtree` can cancel.

        A failing body marks the node ``failed``; under ``on_error="isolate"`` the error is
        recorded and swallowed, under ``fail_fast`` it propagates. Budget exhaustion always
        propagates (the graph decides how to finish)."""
        return _NodeScope(self, node)

    def cancel_subtree(self, node_id: str) -> None:
        """Cancel a node and every descendant still running, with their in-flight calls."""
        for target in (node_id, *(n.id for n in self.graph.descendants(node_id))):
            scope = self._scopes.get(target)
            if scope is not None:
                scope.cancel()
            node = self.graph[target]
            if node.status is NodeStatus.PENDING:
                node.status = NodeStatus.CANCELLED

    # -- calls ---------------------------------------------------------------------------

    async def generate(
        self, node: Node, request: GenerateRequest, runtime: str | None = None
    ) -> GenerateResult:
        """Run one generation for ``node`` and record its usage on the node.

        The runtime is ``runtime``, else the router's pick, else the default. The call
        reserves ``max_new_tokens × n`` (clamped to what is left) and returns the rest when
        it ends. With ``n == 1`` the completion is appended to the node's text and token ids;
        if the call is cancelled, the tokens streamed so far are kept on the node.

        :raises BudgetExhausted: before calling, if no token or call is left.
        """
        if runtime is None:
            router = self.component("router")
            runtime = await router.route(request, node, self) if router is not None else None
        name = runtime or self.default_runtime
        rt = self.runtime(name)
        async with self._limiter:
            return await self._generate_reserved(node, request, name, rt)

    async def generate_on(
        self,
        node: Node,
        handle: SequenceHandle,
        sampling: SamplingParams,
        runtime: str | None = None,
    ) -> Completion:
        """Continue the live sequence ``handle`` for ``node``: the handle-based counterpart of
        :meth:`generate`, with the same token reservation, span and node usage.

        ``runtime`` names the runtime that opened ``handle`` (default: the run's default); no
        router is asked, since a handle lives on one runtime. ``sampling.n`` must be 1. The
        completion is appended to the node's text and token ids; if the call is cancelled,
        the tokens the handle gained meanwhile are counted as generated.

        :raises BudgetExhausted: before calling, if no token or call is left.
        """
        name = runtime or self.default_runtime
        rt = self.runtime(name)
        async with self._limiter:
            wanted = sampling.max_new_tokens
            granted = await self._reserve(wanted)
            if granted < wanted:
                sampling = sampling.model_copy(update={"max_new_tokens": granted})
            node.runtime, node.model = name, rt.model
            span = self.tracer.start_call(
                node,
                "text_completion",
                rt.provider,
                rt.model,
                {
                    "gen_ai.request.temperature": sampling.temperature,
                    "gen_ai.request.max_tokens": sampling.max_new_tokens,
                    "gen_ai.request.top_p": sampling.top_p,
                    "gen_ai.request.choice.count": 1,
                },
            )
            before = len(handle.token_ids)
            try:
                completion = await handle.generate(sampling)
            except BaseException as exc:
                self._interrupted(node, granted, _grown(handle, before, sampling), span, exc)
                raise
            generated = max(len(completion.token_ids), _grown(handle, before, sampling))
            stop = completion.matched_stop
            if isinstance(stop, int) and completion.token_ids[-1:] != [stop]:
                generated += 1  # a stop token (EOS) the completion trimmed was generated too
            self._settle(granted, generated)
            node.usage = node.usage + Usage(generated_tokens=generated)
            if granted < wanted and completion.finish_reason == "length":
                self.stopped_by = BudgetExhausted(
                    "max_generated_tokens",
                    self.budget.usage.generated_tokens,
                    self.config.budget.max_generated_tokens or 0,
                )
            node.text += completion.text
            node.token_ids.extend(completion.token_ids)
            if span is not None:
                span.set_attributes(
                    {
                        "gen_ai.usage.output_tokens": generated,
                        "gen_ai.response.finish_reasons": [completion.finish_reason],
                    }
                )
                span.end()
            return completion

    async def _reserve(self, wanted: int) -> int:
        """Reserve tokens; when none are free but other calls hold reservations, wait for
        them to settle (they usually return most of it) instead of failing."""
        while True:
            try:
                return self.budget.reserve_tokens(wanted)
            except BudgetExhausted as exc:
                if exc.limit != "max_generated_tokens" or self.budget.reserved_tokens == 0:
                    raise
                await self._settled.wait()

    def _interrupted(
        self, node: Node, granted: int, generated: int, span: Span | None, exc: BaseException
    ) -> None:
        """A call that failed or was cancelled: charge what it generated, close its span."""
        node.usage = node.usage + Usage(generated_tokens=generated)
        self._settle(granted, generated)
        if span is not None:
            span.set_attribute("gen_ai.usage.output_tokens", generated)
            span.set_attribute("error.type", type(exc).__name__)
            span.end()

    def _settle(self, granted: int, generated: int, usage: Usage | None = None) -> None:
        if usage is None:
            self.budget.settle_tokens(granted, generated)
        else:
            self.budget.settle_tokens(
                granted, usage.generated_tokens, usage.prompt_tokens, usage.cached_tokens
            )
        self._settled.set()
        self._settled = anyio.Event()

    async def _generate_reserved(
        self, node: Node, request: GenerateRequest, name: str, rt: Runtime
    ) -> GenerateResult:
        sampling = request.sampling
        wanted = sampling.max_new_tokens * sampling.n
        granted = await self._reserve(wanted)
        if granted < wanted:
            per_sample = granted // sampling.n
            if per_sample == 0:
                self._settle(granted, 0)
                raise BudgetExhausted(
                    "max_generated_tokens",
                    self.budget.usage.generated_tokens,
                    self.config.budget.max_generated_tokens or 0,
                )
            sampling = sampling.model_copy(update={"max_new_tokens": per_sample})
            request = request.model_copy(update={"sampling": sampling})
        node.runtime, node.model = name, rt.model
        operation = "chat" if request.prompt.messages is not None else "text_completion"
        span = self.tracer.start_call(
            node,
            operation,
            rt.provider,
            rt.model,
            {
                "gen_ai.request.temperature": sampling.temperature,
                "gen_ai.request.max_tokens": sampling.max_new_tokens,
                "gen_ai.request.top_p": sampling.top_p,
                "gen_ai.request.choice.count": sampling.n,
            },
        )
        partial = _Partial()
        result: GenerateResult | None = None
        try:
            if sampling.n == 1 and Capability.STREAMING in rt.capabilities:
                result = await _stream_collect(rt, request, partial)
            else:
                result = (await rt.generate([request]))[0]
        except BaseException as exc:
            node.token_ids.extend(partial.token_ids)
            node.text += "".join(partial.text)
            self._interrupted(node, granted, len(partial.token_ids), span, exc)
            raise
        usage = result.usage
        self._settle(granted, 0, usage)
        node.usage = node.usage + usage
        if granted < wanted and any(c.finish_reason == "length" for c in result.completions):
            # The budget, not the request, cut this call short: the run's budget is spent.
            self.stopped_by = BudgetExhausted(
                "max_generated_tokens",
                self.budget.usage.generated_tokens,
                self.config.budget.max_generated_tokens or 0,
            )
        if sampling.n == 1 and result.completions:
            completion = result.completions[0]
            node.text += completion.text
            node.token_ids.extend(completion.token_ids)
        if result.meta.get("fallback"):
            self.report_fallback(str(result.meta["fallback"]))
        if span is not None:
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.generated_tokens,
                    "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
                    "gen_ai.response.finish_reasons": [c.finish_reason for c in result.completions],
                }
            )
            span.end()
        return result

    async def score(
        self,
        batch: ScoreBatch,
        node: Node | None = None,
        scorer: Scorer | None = None,
        name: str | None = None,
    ) -> list[float]:
        """Score a batch with ``scorer`` (default: the run's scorer), counting one scorer
        call per candidate.

        :raises BudgetExhausted: if the scorer-call limit would be exceeded.
        """
        scorer = scorer or self.component("scorer")
        if scorer is None:
            raise ConfigError("this run has no scorer", field="scorer")
        self.budget.charge_scorer_call(len(batch.candidates))
        span = self.tracer.start_score(node, name or type(scorer).__name__, len(batch.candidates))
        try:
            async with self._limiter:
                scores = await scorer.score(batch, self)
        finally:
            if span is not None:
                span.end()
        if len(scores) != len(batch.candidates):
            raise ConfigError(
                f"returned {len(scores)} scores for {len(batch.candidates)} candidates",
                field="scorer",
            )
        return [float(s) for s in scores]


def _grown(handle: SequenceHandle, before: int, sampling: SamplingParams) -> int:
    """Tokens the handle gained during a call, at most what the call could produce: a view
    also grows while it generates, as the segments it reads grow (Hogwild! workers)."""
    return max(0, min(len(handle.token_ids) - before, sampling.max_new_tokens))


async def _stream_collect(
    rt: Runtime, request: GenerateRequest, partial: _Partial
) -> GenerateResult:
    completion: Completion | None = None
    usage = Usage()
    stream = rt.stream(request)
    try:
        async for chunk in stream:
            partial.token_ids.extend(chunk.token_ids)
            partial.text.append(chunk.text)
            if chunk.completion is not None:
                completion = chunk.completion
            if chunk.usage is not None:
                usage = chunk.usage
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
    if completion is None:
        completion = Completion(
            text="".join(partial.text), token_ids=list(partial.token_ids), finish_reason="abort"
        )
    return GenerateResult(request_id=request.request_id, completions=[completion], usage=usage)


class _NodeScope:
    """The lifecycle of one node (see :meth:`RunContext.running`). A class, not a generator
    context manager: it runs once per node and is on the executor's hot path."""

    __slots__ = ("_ctx", "_node", "_scope")

    def __init__(self, ctx: RunContext, node: Node) -> None:
        self._ctx = ctx
        self._node = node
        self._scope = anyio.CancelScope()

    async def __aenter__(self) -> Node:
        ctx, node = self._ctx, self._node
        if node.status is NodeStatus.CANCELLED:
            self._scope.cancel()  # cancelled before it started
        self._scope.__enter__()
        ctx._scopes[node.id] = self._scope
        node.status = NodeStatus.RUNNING
        node.started_at = ctx.budget.elapsed
        if ctx.tracer.enabled:
            ctx.tracer.start_node(node)
        if ctx._node_start is not None:
            ctx._node_start(ctx=ctx, node=node)
        return node

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        ctx, node = self._ctx, self._node
        swallow = False
        if exc is None:
            node.status = NodeStatus.DONE
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            node.status = NodeStatus.CANCELLED
        elif isinstance(exc, BudgetExhausted):
            node.status = NodeStatus.CANCELLED
            node.error = str(exc)
        elif isinstance(exc, Exception):
            node.status = NodeStatus.FAILED
            node.error = f"{type(exc).__name__}: {exc}"
            swallow = ctx.config.on_error == "isolate"
        else:
            node.status = NodeStatus.CANCELLED
        node.ended_at = ctx.budget.elapsed
        del ctx._scopes[node.id]
        if ctx.tracer.enabled:
            ctx.tracer.end_node(node)
        if ctx._node_end is not None:
            ctx._node_end(ctx=ctx, node=node)
        # The scope swallows the cancellation it caused itself (cancel_subtree).
        suppressed = bool(self._scope.__exit__(exc_type, exc, tb))
        return swallow or suppressed
