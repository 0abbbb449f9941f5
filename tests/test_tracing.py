"""Spans follow the GenAI semantic conventions; joins link to their parents' spans."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import GenerateRequest, Orchestrator, RunContext, SamplingParams
from orchestrator.testing import ScriptedRuntime

from .conftest import QUESTION, graph_plugin


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    result: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        result.setdefault(span.name, []).append(span)
    return result


async def test_search_run_spans(
    arithmetic_runtime: ScriptedRuntime, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    orch = Orchestrator(arithmetic_runtime, tracer_provider=provider)
    result = await orch.run(QUESTION, strategy_options={"n": 2}, reference="7")
    spans = by_name(exporter.get_finished_spans())
    assert sorted(spans) == [
        "invoke_workflow search",
        "orchestrator.node search",
        "orchestrator.score answer_match",
        "text_completion scripted",
    ]
    (run,) = spans["invoke_workflow search"]
    assert run.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert run.attributes["orchestrator.run.id"] == result.run_id
    assert run.attributes["orchestrator.run.stop_reason"] == "done"
    calls = spans["text_completion scripted"]
    assert len(calls) == 2
    node_spans = {
        s.attributes["orchestrator.node.id"]: s for s in spans["orchestrator.node search"]
    }
    for call in calls:
        attrs = call.attributes
        node = result.graph[str(attrs["orchestrator.node.id"])]
        assert attrs["gen_ai.provider.name"] == "orchestrator.scripted"
        assert attrs["gen_ai.request.model"] == "scripted"
        assert attrs["gen_ai.request.temperature"] == 0.8
        assert attrs["gen_ai.request.max_tokens"] == 384
        assert attrs["gen_ai.usage.output_tokens"] == node.usage.generated_tokens
        assert attrs["gen_ai.usage.input_tokens"] == node.usage.prompt_tokens
        assert attrs["gen_ai.usage.cache_read.input_tokens"] == node.usage.cached_tokens
        assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
        assert call.parent is not None
        assert call.parent.span_id == node_spans[node.id].context.span_id
    for node_id, span in node_spans.items():
        assert span.attributes["orchestrator.node.parent_id"] == "r"
        assert span.attributes["orchestrator.node.depth"] == 1
        assert span.attributes["orchestrator.node.kind"] == "search"
        assert span.parent is not None and span.parent.span_id == run.context.span_id
        assert span.attributes["orchestrator.node.status"] == "done", node_id


async def test_join_links_to_all_parents(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    runtime = ScriptedRuntime({"default": {"outputs": ["x"]}})

    async def driver(ctx: RunContext) -> str | None:
        paths = [ctx.add_node("path", [ctx.root]) for _ in range(3)]
        for path in paths:
            async with ctx.running(path):
                await ctx.generate(
                    path, GenerateRequest(prompt="p", sampling=SamplingParams(max_new_tokens=4))
                )
        summary = ctx.add_node("summary", paths)
        async with ctx.running(summary):
            pass
        return "ok"

    orch = Orchestrator(runtime, plugins=[graph_plugin("dag", driver)], tracer_provider=provider)
    await orch.run("q", graph="dag")
    spans = by_name(exporter.get_finished_spans())
    paths = {s.attributes["orchestrator.node.id"]: s for s in spans["orchestrator.node path"]}
    (summary,) = spans["orchestrator.node summary"]
    assert summary.parent is not None and summary.parent.span_id == paths["r.0"].context.span_id
    assert [link.context.span_id for link in summary.links] == [
        paths["r.1"].context.span_id,
        paths["r.2"].context.span_id,
    ]
    assert summary.attributes["orchestrator.node.parent_ids"] == ("r.0", "r.1", "r.2")


async def test_no_provider_means_no_spans(
    arithmetic_runtime: ScriptedRuntime, exporter: InMemorySpanExporter
) -> None:
    orch = Orchestrator(arithmetic_runtime)
    await orch.run(QUESTION, strategy_options={"n": 1})
    assert exporter.get_finished_spans() == ()
