"""SGLang's error answers, turned into the core's exceptions.

SGLang 0.5.17 reports a refused request as HTTP 400 with ``{"error": {"message": ...}}``
(recorded: negative ``max_new_tokens``, a prompt over the context, a bad ``json_schema``, a
negative temperature), an unknown sampling key as a bare ``500 Internal Server Error``, a
server still starting as ``503`` with an empty body, and an error inside a stream as a
``data: {"error": {...}}`` event. Each becomes one of our exceptions carrying SGLang's own
message and the body that caused it (``.request``); a prompt over the context becomes
:class:`~orchestrator.ContextOverflow` whose ``__cause__`` is the rejection with SGLang's text.

Transport errors (httpx) are translated in :mod:`.client`, the one place that calls httpx.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from orchestrator import (
    ContextOverflow,
    OrchestratorError,
    RequestRejected,
    RuntimeFailure,
    RuntimeUnavailable,
)

__all__ = ["error_for_payload", "error_for_status", "sglang_message", "summarize_body"]

_MAX_SUMMARY_CHARS = 400
#: "The input (2100 tokens) is longer than the model's context length (2048 tokens)."
_INPUT_TOO_LONG = re.compile(
    r"input \((\d+) tokens\) is longer than the model's context length \((\d+) tokens\)"
)
#: "... maximum context length of 2048 tokens. You requested a total of 2110 tokens ..."
_TOTAL_TOO_LONG = re.compile(
    r"maximum context length of (\d+) tokens\. You requested a total of (\d+) tokens"
)
#: Statuses that mean "this server cannot serve now" (a router says 502/504 for a dead worker).
_UNAVAILABLE = frozenset({502, 503, 504})


def sglang_message(text: str) -> str:
    """SGLang's human message from an error body: ``error.message``, ``message``,
    FastAPI's ``detail``, or the raw text."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return text.strip() or "(empty body)"
    return _message_of(payload) or text.strip()


def _message_of(payload: object) -> str | None:
    if isinstance(payload, Mapping):
        error = payload.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("message", "detail"):
            if isinstance(payload.get(key), str):
                return str(payload[key])
    return None


def summarize_body(body: object) -> str:
    """A short, readable form of a request body for error messages: long id lists are cut."""

    def shorten(value: Any) -> Any:
        if isinstance(value, list) and len(value) > 12:
            return [*value[:6], f"... ({len(value)} items)"]
        if isinstance(value, list):
            return [shorten(v) for v in value]
        if isinstance(value, Mapping):
            return {k: shorten(v) for k, v in value.items()}
        if isinstance(value, str) and len(value) > 120:
            return value[:100] + f"... ({len(value)} chars)"
        return value

    text = json.dumps(shorten(body), ensure_ascii=False)
    return text if len(text) <= _MAX_SUMMARY_CHARS else text[:_MAX_SUMMARY_CHARS] + "..."


def error_for_status(
    status: int,
    text: str,
    *,
    runtime: str,
    method: str,
    path: str,
    body: object,
    attempts: int = 1,
) -> OrchestratorError:
    """The exception for an HTTP error answer (status ≥ 400) from SGLang.

    - 400-499: :class:`RequestRejected` (or :class:`ContextOverflow` for a too-long prompt);
    - 500: :class:`RequestRejected` too, since 0.5.17 says 500 for an unknown sampling key
      and resending the same body elsewhere would fail the same way;
    - 502, 503, 504: :class:`RuntimeUnavailable` (a pool fails over on it);
    - any other 5xx: :class:`RuntimeFailure`.
    """
    message = sglang_message(text)
    tried = f" (after {attempts} attempts)" if attempts > 1 else ""
    where = f"{method} {path} -> HTTP {status}{tried}: {message}; request: {summarize_body(body)}"
    if status in _UNAVAILABLE:
        return RuntimeUnavailable(where, runtime=runtime, request=body)
    if status == 500:
        hint = " (SGLang 0.5.17 answers an unknown sampling_params key this way)"
        return RequestRejected(where + hint, runtime=runtime, request=body, status=status)
    if 400 <= status < 500:
        rejected = RequestRejected(where, runtime=runtime, request=body, status=status)
        return _as_overflow(message, rejected) or rejected
    return RuntimeFailure(where, runtime=runtime, request=body)


def error_for_payload(
    payload: Mapping[str, Any], *, runtime: str, body: object, where: str = "error in stream"
) -> OrchestratorError:
    """The exception for a ``data: {"error": ...}`` event inside a stream.

    SGLang sends request errors found after the stream started (validation in the tokenizer
    manager) this way, with HTTP 200 already sent, so they map like a 400. ``sglang.Engine``
    raises the same messages as ``ValueError`` (``where`` says which).
    """
    message = _message_of(payload) or json.dumps(payload)
    rejected = RequestRejected(
        f"{where}: {message}; request: {summarize_body(body)}",
        runtime=runtime,
        request=body,
    )
    return _as_overflow(message, rejected) or rejected


def _as_overflow(message: str, rejected: RequestRejected) -> ContextOverflow | None:
    if match := _INPUT_TOO_LONG.search(message):
        num_tokens, max_tokens = int(match[1]), int(match[2])
    elif match := _TOTAL_TOO_LONG.search(message):
        max_tokens, num_tokens = int(match[1]), int(match[2])
    else:
        return None
    overflow = ContextOverflow(num_tokens, max_tokens)
    overflow.__cause__ = rejected  # keeps SGLang's message and the request
    return overflow
