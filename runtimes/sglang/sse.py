"""Server-sent events from SGLang's streaming ``/generate``, as parsed JSON chunks.

SGLang writes ``data: {json}`` events separated by blank lines and ends with
``data: [DONE]``. By default each chunk carries the whole output so far (text and
``output_ids``), ``finish_reason: null`` until the last one (recorded: ``generate_stream``).
An error after the stream started arrives as ``data: {"error": {...}}``. A stream that ends
without ``[DONE]`` was cut off: that is an error, not a short answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

from orchestrator import RuntimeFailure, RuntimeUnavailable

from .errors import error_for_payload

__all__ = ["iter_sse_chunks"]


async def iter_sse_chunks(
    lines: AsyncIterable[str], *, runtime: str, body: object
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield each ``data:`` event's JSON object until ``[DONE]``.

    Follows the SSE rules SGLang relies on: ``data:`` lines accumulate until a blank line
    dispatches the event (several ``data:`` lines join with ``\\n``), ``:`` lines are
    comments, other fields (``event:``, ``id:``) are ignored.

    :raises RequestRejected: or :class:`~orchestrator.ContextOverflow` for an error event.
    :raises RuntimeFailure: for an event that is not a JSON object.
    :raises RuntimeUnavailable: if the stream ends before ``[DONE]``.
    """
    pending: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if line:
            if line.startswith("data:"):
                pending.append(line[5:].removeprefix(" "))
            continue
        if not pending:
            continue
        data, pending = "\n".join(pending), []
        if data == "[DONE]":
            return
        yield _parse(data, runtime=runtime, body=body)
    if pending:
        data = "\n".join(pending)
        if data == "[DONE]":
            return
        yield _parse(data, runtime=runtime, body=body)
    raise RuntimeUnavailable(
        "stream ended before data: [DONE] (server closed the connection)",
        runtime=runtime,
        request=body,
    )


def _parse(data: str, *, runtime: str, body: object) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise RuntimeFailure(
            f"stream event is not JSON: {data[:200]!r}", runtime=runtime, request=body
        ) from exc
    if not isinstance(payload, dict):
        raise RuntimeFailure(
            f"stream event is not a JSON object: {data[:200]!r}", runtime=runtime, request=body
        )
    if "error" in payload:
        raise error_for_payload(payload, runtime=runtime, body=body)
    return payload
