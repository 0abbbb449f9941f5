"""An async client for one SGLang server's native API (``/generate`` and friends).

This is the only module that calls httpx, and :meth:`SGLangClient._translate` the only place
httpx errors become ours (``raise RuntimeUnavailable(...) from exc``). It keeps one
connection pool per server, validates every ``/generate`` body before sending it
(:func:`.params.validate_generate_body`), and retries with exponential backoff only what is
safe to resend: a connection that could not be opened, and ``503`` while the server starts
(recorded: ``health_while_starting_*``). Everything else fails at once with SGLang's message
and the request (:mod:`.errors`).

Usage::

    async with SGLangClient("http://127.0.0.1:30000") as client:
        await client.wait_ready(timeout_s=300)
        out = await client.generate({"input_ids": [1, 2, 3],
                                     "sampling_params": {"max_new_tokens": 8}})
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, NamedTuple, Self

import anyio
import httpx

from orchestrator import RuntimeFailure, RuntimeUnavailable

from .errors import error_for_status
from .params import validate_generate_body
from .sse import iter_sse_chunks

__all__ = ["RetryPolicy", "SGLangClient"]

_log = logging.getLogger("orchestrator.runtimes.sglang")


class RetryPolicy(NamedTuple):
    """How often a connection failure or a ``503`` is retried: ``max_attempts`` tries in all,
    sleeping ``backoff_s``, then twice that, up to ``max_backoff_s``, between them."""

    max_attempts: int = 4
    backoff_s: float = 0.25
    max_backoff_s: float = 4.0

    def delay(self, attempt: int) -> float:
        return float(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))


class SGLangClient:
    """One SGLang server. Safe to share between tasks; close it with :meth:`aclose`.

    :param base_url: ``http://host:port`` of the server (or of an SGLang router).
    :param timeout: httpx timeout; the read timeout bounds a whole non-streaming generation.
    :param max_connections: pool size; a fan-out of N children needs N connections at once.
    :param transport: an httpx transport (tests); default: real sockets.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/")
        self.name = f"sglang@{self.url}"
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout or httpx.Timeout(600.0, connect=10.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection. Idempotent."""
        with anyio.CancelScope(shield=True):
            await self._http.aclose()

    # -- the native API ------------------------------------------------------------------

    async def generate(self, body: Mapping[str, Any]) -> Any:
        """``POST /generate`` (not streaming). Returns SGLang's JSON: a dict, or a list for
        ``n > 1`` or a batch.

        :raises RequestRejected: for an invalid body (before sending) or a 4xx/500 answer.
        :raises ContextOverflow: if the prompt is longer than the server's context.
        :raises RuntimeUnavailable: if the server cannot be reached or stays unavailable.
        """
        body = {k: v for k, v in body.items() if k != "stream"}
        validate_generate_body(body, runtime=self.name)
        response = await self.request("POST", "/generate", body)
        return self._json(response, "POST", "/generate", body)

    async def stream(self, body: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """``POST /generate`` with ``stream: true``: yield each chunk (whole output so far).

        Closing the iterator closes the connection; the caller aborts the ``rid`` if it
        wants the server to stop at once (see :class:`.runtime.SGLangRuntime`).
        """
        body = {**body, "stream": True}
        validate_generate_body(body, runtime=self.name)
        response = await self._send("POST", "/generate", body, stream=True)
        try:
            lines = response.aiter_lines()
            async with aclosing(iter_sse_chunks(lines, runtime=self.name, body=body)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._translate(exc, "POST", "/generate", body) from exc
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def abort(self, rid: str) -> None:
        """``POST /abort_request``: stop every request whose rid starts with ``rid`` (SGLang
        matches by prefix). The aborted request still answers, with ``finish_reason`` abort
        and the tokens made so far (recorded: ``generate_aborted``)."""
        await self.request("POST", "/abort_request", {"rid": rid})

    async def health(self) -> bool:
        """One ``GET /health``: True on 200, False while starting (503) or unreachable."""
        try:
            response = await self._http.get("/health")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def wait_ready(self, timeout_s: float) -> None:
        """Poll ``/health`` until it answers 200.

        :raises RuntimeUnavailable: if it does not within ``timeout_s``.
        """
        attempt = 0
        with anyio.move_on_after(timeout_s):
            while not await self.health():
                attempt += 1
                await anyio.sleep(self.retry.delay(attempt))
            return
        raise RuntimeUnavailable(
            f"/health did not answer 200 within {timeout_s:g} s", runtime=self.name
        )

    async def model_info(self) -> dict[str, Any]:
        """``GET /model_info`` (``model_path``, ``tokenizer_path``, ...)."""
        return await self._get_object("/model_info")

    async def server_info(self) -> dict[str, Any]:
        """``GET /server_info``: the server arguments plus ``version``."""
        return await self._get_object("/server_info")

    async def flush_cache(self) -> str:
        """``POST /flush_cache``. SGLang refuses it while requests run (and says so in text)."""
        response = await self.request("POST", "/flush_cache", {})
        return response.text

    async def open_session(self, capacity_of_str_len: int) -> str:
        """``POST /open_session``: the new session's id (SGLang answers a JSON string)."""
        body = {"capacity_of_str_len": capacity_of_str_len}
        response = await self.request("POST", "/open_session", body)
        session_id = self._json(response, "POST", "/open_session", body)
        if not isinstance(session_id, str):
            raise RuntimeFailure(
                f"/open_session answered {session_id!r}, expected a session id string",
                runtime=self.name,
                request=body,
            )
        return session_id

    async def close_session(self, session_id: str) -> None:
        """``POST /close_session``."""
        await self.request("POST", "/close_session", {"session_id": session_id})

    # -- transport -----------------------------------------------------------------------

    async def request(self, method: str, path: str, body: object = None) -> httpx.Response:
        """Send one request, with retries, and return the (2xx) response, body read.

        No validation: :meth:`generate` validates; this is for endpoints without a body
        contract, and for sending raw bodies on purpose.
        """
        response = await self._send(method, path, body, stream=False)
        return response

    async def _send(self, method: str, path: str, body: object, *, stream: bool) -> httpx.Response:
        content = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if content is not None else {}
        attempt = 0
        while True:
            attempt += 1
            request = self._http.build_request(method, path, content=content, headers=headers)
            try:
                response = await self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.retry.max_attempts:
                    raise self._translate(exc, method, path, body, attempt) from exc
                _log.info("%s %s%s: %r, retry %d", method, self.url, path, exc, attempt)
                await anyio.sleep(self.retry.delay(attempt))
                continue
            except httpx.HTTPError as exc:
                raise self._translate(exc, method, path, body, attempt) from exc
            if response.status_code < 400:
                return response
            try:
                text = (await response.aread()).decode(errors="replace")
            except httpx.HTTPError as exc:
                raise self._translate(exc, method, path, body, attempt) from exc
            finally:
                await response.aclose()
            if response.status_code == 503 and attempt < self.retry.max_attempts:
                _log.info("%s %s%s: 503 (starting?), retry %d", method, self.url, path, attempt)
                await anyio.sleep(self.retry.delay(attempt))
                continue
            raise error_for_status(
                response.status_code,
                text,
                runtime=self.name,
                method=method,
                path=path,
                body=body,
                attempts=attempt,
            )

    def _translate(
        self, exc: httpx.HTTPError, method: str, path: str, body: object, attempts: int = 1
    ) -> RuntimeFailure:
        """The one place an httpx error becomes ours; the caller raises it ``from exc``."""
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        what = f"{method} {self.url}{path}: {type(exc).__name__}: {exc or 'no detail'}{tried}"
        if isinstance(exc, httpx.TransportError):
            return RuntimeUnavailable(what, runtime=self.name, request=body)
        return RuntimeFailure(what, runtime=self.name, request=body)

    async def _get_object(self, path: str) -> dict[str, Any]:
        response = await self.request("GET", path)
        payload = self._json(response, "GET", path, None)
        if not isinstance(payload, dict):
            raise RuntimeFailure(
                f"GET {path} answered {type(payload).__name__}, expected an object",
                runtime=self.name,
            )
        return payload

    def _json(self, response: httpx.Response, method: str, path: str, body: object) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise RuntimeFailure(
                f"{method} {path} answered non-JSON: {response.text[:200]!r}",
                runtime=self.name,
                request=body,
            ) from exc
