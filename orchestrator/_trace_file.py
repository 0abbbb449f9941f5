"""``--trace FILE``: an SDK tracer provider that writes each finished span as one JSON line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

__all__ = ["JsonLinesSpanExporter", "jsonl_tracer_provider"]


class JsonLinesSpanExporter(SpanExporter):
    """Appends spans to a file, one compact JSON object per line."""

    def __init__(self, path: str | Path) -> None:
        # Open for the exporter's lifetime; closed in shutdown().
        self._file: IO[str] = Path(path).open("w", encoding="utf-8")  # noqa: SIM115

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            self._file.write(json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n")
        self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


def jsonl_tracer_provider(path: str | Path) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    return provider
