"""A loopback HTTP server that replays exchanges recorded from a real SGLang server.

SGLang cannot serve on a CPU-only machine, so the client's protocol behaviour (retries,
error mapping, SSE parsing, fan-out order, affinity, failover) is tested against recordings
(``tests/data/sglang-0.5.17/``, made by the GPU kit's ``record.py``) served over a real socket,
so httpx exercises real HTTP/1.1 (keep-alive, chunked server-sent events, dropped
connections). Graph tests can use it the same way to run on "SGLang" without a GPU.

Rules:

- A request is answered by the first expected recording with the same method, path and JSON
  body. Bodies compare exactly (``1`` equals ``1.0``, ``True`` is not ``1``), except ``rid``:
  a recording without one accepts any (SGLang would have made one up); a recording with one
  needs the same.
- Each expectation answers ``times`` requests (default once). Anything else is *unexpected*:
  answered ``418`` with a message, and listed in :attr:`ReplayServer.unexpected` so the test
  fails (:meth:`ReplayServer.assert_clean`).
- ``hold``: the answer waits until the event is set (a slow generation). ``until_abort``: the
  answer waits until an ``/abort_request`` for the request's ``rid`` has been answered,
  which is how the recorded aborted answers came about; a stream sends all but its last
  chunk and ``[DONE]`` first.
- :meth:`ReplayServer.kill` drops every connection and stops listening, like a dead server.

Usage::

    recordings = load_recordings(Path("tests/data/sglang-0.5.17"))
    async with ReplayServer() as server:
        server.expect(recordings["generate_length"])
        ...  # point a client at server.url
        server.assert_clean()
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio
import h11
from anyio.abc import Listener, SocketAttribute, SocketStream, TaskGroup

from .recordings import Recording, bodies_match, load_recordings

__all__ = ["Exchange", "Recording", "ReplayServer", "bodies_match", "load_recordings"]


@dataclass(frozen=True)
class Exchange:
    """A request the server received, and the recording that answered it (None: unexpected)."""

    method: str
    path: str
    body: Any
    answered_by: str | None


@dataclass
class _Expectation:
    recording: Recording
    times: int
    hold: anyio.Event | None
    until_abort: bool
    match: Callable[[Any], bool] | None = None
    used: int = 0


@dataclass
class _State:
    log: list[Exchange] = field(default_factory=list)
    aborted: dict[str, anyio.Event] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)


class ReplayServer:
    """See the module docstring. Listens on ``127.0.0.1`` on a free port (:attr:`url`)."""

    def __init__(self, recordings: Iterable[Recording] = ()) -> None:
        self._expected: list[_Expectation] = []
        self._state = _State()
        self._tg: TaskGroup | None = None
        self._closed = anyio.Event()
        self._serving = anyio.CancelScope()
        self.url = ""
        self.killed = False
        for recording in recordings:
            self.expect(recording)

    def expect(
        self,
        recording: Recording,
        *,
        times: int = 1,
        hold: anyio.Event | None = None,
        until_abort: bool = False,
        match: Callable[[Any], bool] | None = None,
    ) -> None:
        """Answer ``times`` matching requests with ``recording``.

        :param match: instead of comparing bodies, accept any body this predicate accepts
            (for requests whose exact body the test checks itself, from :attr:`log`).
        """
        self._expected.append(_Expectation(recording, times, hold, until_abort, match))

    @property
    def log(self) -> list[Exchange]:
        """Every request received, in arrival order."""
        return list(self._state.log)

    @property
    def unexpected(self) -> list[Exchange]:
        return [e for e in self._state.log if e.answered_by is None]

    def unused(self) -> list[str]:
        """Names of recordings still expected."""
        return [e.recording.name for e in self._expected if e.used < e.times]

    def assert_clean(self, *, all_used: bool = True) -> None:
        """:raises AssertionError: on any unexpected request (or unused expectation)."""
        if self.unexpected:
            raise AssertionError(f"unexpected requests: {self.unexpected}")
        if all_used and self.unused():
            raise AssertionError(f"expected but never requested: {self.unused()}")

    async def wait_for(self, path: str, count: int = 1) -> None:
        """Return once ``count`` requests to ``path`` have arrived."""
        while True:
            changed = self._state.changed
            if sum(e.path == path for e in self._state.log) >= count:
                return
            await changed.wait()

    async def __aenter__(self) -> Self:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.url = f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._serve, listener)
        return self

    async def _serve(self, listener: Listener[SocketStream]) -> None:
        # Its own scope: kill() cancels the server's tasks, not the code using the server
        # (which runs inside the task group's scope).
        with self._serving:
            try:
                async with anyio.create_task_group() as handlers:
                    await listener.serve(self._handle, handlers)
            finally:
                # Closed here, after serve() saw the cancellation, not under its feet.
                with anyio.CancelScope(shield=True):
                    await listener.aclose()
                self._closed.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.kill()
        assert self._tg is not None
        return await self._tg.__aexit__(exc_type, exc, tb)

    async def kill(self) -> None:
        """Drop every connection and stop listening (a crashed server): a new connection
        is refused, a request in flight sees its connection closed."""
        self.killed = True
        self._serving.cancel()
        with anyio.CancelScope(shield=True):
            await self._closed.wait()

    # -- HTTP --------------------------------------------------------------------------

    async def _handle(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while True:
                    request = await self._read(conn, stream)
                    if request is None:
                        return
                    method, path, body = request
                    await self._answer(conn, stream, method, path, body)
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the client went away (closed a stream, or was cancelled)

    async def _read(
        self, conn: h11.Connection, stream: SocketStream
    ) -> tuple[str, str, Any] | None:
        head: h11.Request | None = None
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                raw = b"".join(chunks)
                body = json.loads(raw) if raw else None
                return head.method.decode(), head.target.decode(), body
            else:  # ConnectionClosed, or PAUSED after a response
                return None

    def _find(self, method: str, path: str, body: Any) -> _Expectation | None:
        for exp in self._expected:
            rec = exp.recording
            if exp.used >= exp.times or rec.method != method or rec.path != path:
                continue
            if exp.match(body) if exp.match is not None else bodies_match(rec.body, body):
                exp.used += 1
                return exp
        return None

    async def _answer(
        self, conn: h11.Connection, stream: SocketStream, method: str, path: str, body: Any
    ) -> None:
        exp = self._find(method, path, body)
        self._state.log.append(
            Exchange(method, path, body, exp.recording.name if exp is not None else None)
        )
        self._state.changed.set()
        self._state.changed = anyio.Event()
        if exp is None:
            message = f"replay: unexpected request {method} {path} {json.dumps(body)[:300]}"
            await self._send(conn, stream, 418, "text/plain", [message.encode()])
            return
        rec = exp.recording
        rid = body.get("rid") if isinstance(body, dict) else None
        if exp.hold is not None:
            await exp.hold.wait()
        if path == "/abort_request" and isinstance(rid, str):
            self._aborted(rid).set()
        if rec.sse_lines is not None:
            events = [f"{line}\n\n".encode() for line in rec.sse_lines]
            if exp.until_abort and isinstance(rid, str):
                await self._send(conn, stream, rec.status, rec.content_type, events[:-2], end=False)
                await self._aborted(rid).wait()
                await self._send_more(conn, stream, events[-2:])
                return
            await self._send(conn, stream, rec.status, rec.content_type, events)
            return
        if exp.until_abort and isinstance(rid, str):
            await self._aborted(rid).wait()
        if rec.has_json:
            payload = [json.dumps(rec.json_body).encode()]
        else:
            payload = [(rec.text or "").encode()]
        await self._send(conn, stream, rec.status, rec.content_type, payload)

    def _aborted(self, rid: str) -> anyio.Event:
        return self._state.aborted.setdefault(rid, anyio.Event())

    async def _send(
        self,
        conn: h11.Connection,
        stream: SocketStream,
        status: int,
        content_type: str | None,
        parts: list[bytes],
        *,
        end: bool = True,
    ) -> None:
        headers = [("content-type", content_type)] if content_type else []
        if end and len(parts) <= 1:
            headers.append(("content-length", str(sum(len(p) for p in parts))))
        else:
            headers.append(("transfer-encoding", "chunked"))
        await stream.send(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        await self._send_more(conn, stream, parts, end=end)

    async def _send_more(
        self, conn: h11.Connection, stream: SocketStream, parts: list[bytes], *, end: bool = True
    ) -> None:
        for part in parts:
            if part:
                await stream.send(conn.send(h11.Data(data=part)) or b"")
        if end:
            await stream.send(conn.send(h11.EndOfMessage()) or b"")
