"""OpenTelemetry spans for runs, nodes, runtime calls and scorer calls.

Span names and attributes follow the GenAI semantic conventions (Development status):

- a run is ``invoke_workflow {graph}``;
- a runtime call is ``{gen_ai.operation.name} {gen_ai.request.model}`` with the
  ``gen_ai.request.*``, ``gen_ai.usage.*`` and ``gen_ai.response.finish_reasons`` attributes;
- nodes (``orchestrator.node {kind}``) and scorer calls (``orchestrator.score {name}``) carry
  their tree position under ``orchestrator.*``; a join's span links to its parents' spans.

The tracer comes from the provider the user passes, or the global one. When neither is a
real SDK provider, tracing is off and costs one attribute check per node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from ._graph import Node

__all__ = ["RunTracer"]

_SCOPE = "orchestrator"


def _is_real(provider: trace.TracerProvider) -> bool:
    # The API's defaults record nothing: skip span work entirely for them.
    return not isinstance(provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider)


class RunTracer:
    """The spans of one run. Each node's span is kept until the run ends so children and
    joins can parent and link to it."""

    def __init__(self, provider: trace.TracerProvider | None, run_id: str) -> None:
        provider = provider or trace.get_tracer_provider()
        self.enabled = _is_real(provider)
        self.run_id = run_id
        self._tracer = provider.get_tracer(_SCOPE) if self.enabled else None
        self._run_span: Span | None = None
        self._node_spans: dict[str, Span] = {}
        # A node's span as a parent context, made once per parent (most nodes are leaves).
        self._parent_contexts: dict[str, Context] = {}

    def start_run(self, graph: str, attributes: Mapping[str, Any]) -> None:
        if self._tracer is None:
            return
        self._run_span = self._tracer.start_span(
            f"invoke_workflow {graph}",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_workflow",
                "orchestrator.run.id": self.run_id,
                "orchestrator.graph": graph,
                **attributes,
            },
        )

    def end_run(self, stop_reason: str, error: str | None, attributes: Mapping[str, Any]) -> None:
        span = self._run_span
        if span is None:
            return
        span.set_attributes({"orchestrator.run.stop_reason": stop_reason, **attributes})
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        self._run_span = None

    def start_node(self, node: Node) -> None:
        if self._tracer is None:
            return
        spans = self._node_spans
        parents = [p for p in node.parent_ids if p in spans]
        context = self._parent_context(parents[0] if parents else None)
        links = (
            [Link(spans[p].get_span_context()) for p in parents[1:]] if len(parents) > 1 else None
        )
        self._node_spans[node.id] = self._tracer.start_span(
            f"orchestrator.node {node.kind}",
            context=context,
            links=links,
            attributes={
                "orchestrator.run.id": self.run_id,
                "orchestrator.node.id": node.id,
                "orchestrator.node.parent_id": node.parent_ids[0] if node.parent_ids else "",
                "orchestrator.node.parent_ids": list(node.parent_ids),
                "orchestrator.node.depth": node.depth,
                "orchestrator.node.kind": node.kind,
            },
        )

    def _parent_context(self, node_id: str | None) -> Context | None:
        key = node_id or ""
        context = self._parent_contexts.get(key)
        if context is None:
            span = self._node_spans[node_id] if node_id is not None else self._run_span
            if span is None:
                return None
            context = self._parent_contexts[key] = trace.set_span_in_context(span)
        return context

    def end_node(self, node: Node) -> None:
        span = self._node_spans.get(node.id)
        if span is None:
            return
        span.set_attribute("orchestrator.node.status", node.status.value)
        if node.error:
            span.set_status(Status(StatusCode.ERROR, node.error))
        span.end()

    def start_call(
        self,
        node: Node | None,
        operation: str,
        provider: str,
        model: str,
        attributes: Mapping[str, Any],
    ) -> Span | None:
        """A runtime call span, child of the node's span."""
        if self._tracer is None:
            return None
        context = self._call_parent(node)
        return self._tracer.start_span(
            f"{operation} {model}",
            context=context,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
                "orchestrator.run.id": self.run_id,
                "orchestrator.node.id": node.id if node is not None else "",
                **attributes,
            },
        )

    def _call_parent(self, node: Node | None) -> Context | None:
        """Calls and scores nest under their node's span (the run's span without a node)."""
        if node is not None and node.id in self._node_spans:
            return self._parent_context(node.id)
        return self._parent_context(None)

    def start_score(self, node: Node | None, scorer: str, num_candidates: int) -> Span | None:
        if self._tracer is None:
            return None
        context = self._call_parent(node)
        return self._tracer.start_span(
            f"orchestrator.score {scorer}",
            context=context,
            attributes={
                "orchestrator.run.id": self.run_id,
                "orchestrator.node.id": node.id if node is not None else "",
                "orchestrator.scorer": scorer,
                "orchestrator.score.num_candidates": num_candidates,
            },
        )

    def close_open_spans(self) -> None:
        """End any node span still open (a node left running by a crash): no span leaks."""
        for span in self._node_spans.values():
            if span.is_recording():
                span.end()
