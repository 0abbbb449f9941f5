"""Several SGLang servers behind one runtime: prefix affinity and failover.

Each request carries an affinity key (a tree's key: the ``request_id`` before its first
separator, or a hash of the prompt's first tokens; see :class:`.runtime.SGLangRuntime`).
Servers are ranked for a key by rendezvous hashing: every key has a stable favourite, so a
tree's requests stay on the server that caches its prefix, different trees spread evenly,
and when a server goes down only its keys move.

A server that fails with :class:`~orchestrator.RuntimeUnavailable` (refused or dropped
connection, 502/503/504) is marked down for ``cooldown_s`` and the request goes to the next
server in the key's ranking. Finished requests are never resent. A request is rejected
(:class:`~orchestrator.RequestRejected`) the same way by every server, so it is not retried.
After the cooldown the server is tried again. When every server failed, the last error is
raised, naming each server and its error.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio

from orchestrator import RuntimeUnavailable

__all__ = ["Backend", "Failover", "ServerPool"]

_log = logging.getLogger("orchestrator.runtimes.sglang")
T = TypeVar("T")


class Backend(Protocol):
    """What the runtime needs from one SGLang server: an HTTP :class:`.client.SGLangClient`
    or an in-process :class:`.engine.EngineBackend`."""

    url: str
    name: str

    async def generate(self, body: Mapping[str, Any]) -> Any: ...

    def stream(self, body: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]: ...

    async def abort(self, rid: str) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Failover:
    """A server a request left because it failed, and why."""

    server: str
    error: str


@dataclass
class _Server:
    backend: Backend
    down_until: float = 0.0
    last_error: str | None = None


class ServerPool:
    """Backends ranked per affinity key, with down-marking.

    :param backends: the servers; one for a single server or an SGLang router.
    :param cooldown_s: how long a failed server is skipped before it is tried again.
    """

    def __init__(self, backends: Sequence[Backend], *, cooldown_s: float = 30.0) -> None:
        if not backends:
            raise ValueError("a server pool needs at least one backend")
        self._servers = [_Server(b) for b in backends]
        self.cooldown_s = cooldown_s

    @property
    def backends(self) -> list[Backend]:
        return [s.backend for s in self._servers]

    def is_down(self, backend: Backend) -> bool:
        return self._server(backend).down_until > time.monotonic()

    def ranked(self, key: str) -> list[Backend]:
        """Servers for ``key``, best first: up servers by rendezvous score, then down ones."""

        def score(server: _Server) -> int:
            digest = hashlib.blake2b(f"{key}\0{server.backend.url}".encode(), digest_size=8)
            return int.from_bytes(digest.digest(), "big")

        now = time.monotonic()
        order = sorted(self._servers, key=score, reverse=True)
        return [s.backend for s in order if s.down_until <= now] + [
            s.backend for s in order if s.down_until > now
        ]

    def server_for(self, key: str) -> Backend:
        """The server requests with ``key`` go to now."""
        return self.ranked(key)[0]

    def mark_down(self, backend: Backend, error: BaseException) -> None:
        server = self._server(backend)
        server.down_until = time.monotonic() + self.cooldown_s
        server.last_error = f"{type(error).__name__}: {error}"
        _log.warning(
            "SGLang server %s marked down for %gs: %s",
            backend.url,
            self.cooldown_s,
            server.last_error,
        )

    async def run(
        self, key: str, op: Callable[[Backend], Awaitable[T]]
    ) -> tuple[T, Backend, list[Failover]]:
        """Run ``op`` on the key's server, failing over to the next on RuntimeUnavailable.

        :return: ``op``'s result, the backend that produced it, and the servers left before.
        :raises RuntimeUnavailable: if every server failed (from the last error).
        """
        failovers: list[Failover] = []
        last: RuntimeUnavailable | None = None
        for backend in self.ranked(key):
            try:
                return await op(backend), backend, failovers
            except RuntimeUnavailable as exc:
                self.mark_down(backend, exc)
                failovers.append(Failover(server=backend.url, error=str(exc)))
                last = exc
        tried = "; ".join(f"{f.server}: {f.error}" for f in failovers)
        raise RuntimeUnavailable(
            f"all {len(self._servers)} SGLang server(s) failed: {tried}", runtime="sglang"
        ) from last

    async def aclose(self) -> None:
        """Close every backend's connections (shielded: this is cleanup)."""
        with anyio.CancelScope(shield=True):
            for server in self._servers:
                await server.backend.aclose()

    def _server(self, backend: Backend) -> _Server:
        for server in self._servers:
            if server.backend is backend:
                return server
        raise ValueError(f"{backend.url} is not in this pool")
