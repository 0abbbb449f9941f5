"""Sending prepared ``/generate`` bodies: fan-out order, failover, aborts, statistics.

The runtime turns requests into :class:`Job` s (a body, its token ids, an affinity key and a
``rid``); the :class:`Dispatcher` decides how they travel:

- every job, of a batch or alone, generated or streamed, first joins the fan-out window of
  its affinity key (:class:`.fanout.PrefixCoalescer`): a prefix it shares with jobs that
  arrived with it is prefilled (``max_new_tokens=0``) before they are all sent;
- each job runs through :meth:`.pool.ServerPool.run`, so it fails over to another server
  when its server is unavailable; a finished job is never resent;
- a job cancelled while in flight is aborted on its server (``/abort_request``), under a
  shielded scope with a timeout so that cleanup survives the cancellation;
- ``rid`` s are kept prefix-free among jobs in flight, because SGLang aborts every request
  whose rid *starts with* the aborted one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import anyio

from orchestrator import OrchestratorError, RuntimeFailure, RuntimeUnavailable

from .convert import usage_from_meta
from .fanout import PrefixCoalescer
from .pool import Backend, Failover, ServerPool

__all__ = ["Dispatcher", "Done", "Job", "SGLangStatistics"]

_log = logging.getLogger("orchestrator.runtimes.sglang")


@dataclass
class Job:
    """One ``/generate`` body ready to send, but for its ``rid``.

    :ivar wanted_rid: the caller's request id, used as the rid unless it clashes.
    :ivar prefix_cap: the longest prefix that may be prefilled for it (score requests: the
        prompt, since ``logprob_start_len`` caps cache reuse there).
    """

    body: dict[str, Any]
    ids: list[int]
    key: str
    wanted_rid: str | None = None
    prefix_cap: int | None = None


@dataclass
class Done:
    """A finished job: SGLang's output, where it ran, and what happened on the way."""

    output: Any
    server: str
    rid: str
    failovers: list[Failover] = field(default_factory=list)
    prefill: dict[str, Any] | None = None

    def meta(self) -> dict[str, Any]:
        """What :attr:`GenerateResult.meta` records: server, rid, failovers, prefill."""
        meta: dict[str, Any] = {"server": self.server, "rid": self.rid}
        if self.failovers:
            meta["failover"] = [asdict(f) for f in self.failovers]
        if self.prefill is not None:
            meta["prefix_prefill"] = self.prefill
        return meta


class SGLangStatistics(NamedTuple):
    """Counters since the runtime was built (every request, prefill and abort sent)."""

    requests: int
    prefills: int
    aborts: int
    failovers: int
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int


@dataclass
class _Counters:
    requests: int = 0
    prefills: int = 0
    aborts: int = 0
    failovers: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0

    def count(self, output: Any) -> None:
        for item in output if isinstance(output, list) else [output]:
            usage = usage_from_meta(item.get("meta_info", {}))
            self.prompt_tokens += usage.prompt_tokens
            self.cached_tokens += usage.cached_tokens
            self.generated_tokens += usage.generated_tokens


class Dispatcher:
    """Sends jobs to a :class:`ServerPool` (see the module docstring)."""

    def __init__(
        self,
        pool: ServerPool,
        *,
        fanout: bool,
        min_prefix_tokens: int,
        abort_timeout_s: float,
        window_s: float = 0.0,
    ) -> None:
        self.pool = pool
        self._coalescer = (
            PrefixCoalescer(min_prefix_tokens=min_prefix_tokens, window_s=window_s)
            if fanout
            else None
        )
        self._abort_timeout_s = abort_timeout_s
        self._in_flight: dict[str, Backend | None] = {}
        self._counters = _Counters()

    def statistics(self) -> SGLangStatistics:
        return SGLangStatistics(**asdict(self._counters))

    def claim_rid(self, wanted: str | None) -> str:
        """``wanted`` if no rid in flight is a prefix of it or it of one; else a fresh uuid
        (fixed length, so prefix-free). Released when its job ends."""
        rid = wanted or uuid.uuid4().hex
        if any(r.startswith(rid) or rid.startswith(r) for r in self._in_flight):
            rid = uuid.uuid4().hex
        self._in_flight[rid] = None
        return rid

    def release_rid(self, rid: str) -> None:
        self._in_flight.pop(rid, None)

    async def abort(self, rid: str) -> bool:
        """Abort a job in flight by its rid. :return: False if no such job is in flight."""
        backend = self._in_flight.get(rid)
        if backend is None:
            return False
        await backend.abort(rid)
        self._counters.aborts += 1
        return True

    async def run(self, jobs: Sequence[Job]) -> list[Done]:
        """Send every job; results in job order.

        The jobs start together, so the fan-out window sees them as one group. All run to
        completion even if one fails, so that a batch's outcome does not depend on timing;
        then the first failure (in job order) is raised.
        """
        done: list[Done | None] = [None] * len(jobs)
        errors: dict[int, OrchestratorError] = {}
        async with anyio.create_task_group() as tg:
            for index, job in enumerate(jobs):
                tg.start_soon(self._run_member, index, job, done, errors)
        if errors:
            first = errors[min(errors)]
            if len(errors) > 1:
                first.add_note(f"{len(errors)} of {len(jobs)} requests in this batch failed")
            raise first
        return [d for d in done if d is not None]

    async def _run_member(
        self,
        index: int,
        job: Job,
        done: list[Done | None],
        errors: dict[int, OrchestratorError],
    ) -> None:
        rid = self.claim_rid(job.wanted_rid)
        body = {**job.body, "rid": rid}
        try:
            prefill = await self._coalesce(job)
            output, backend, failovers = await self.pool.run(
                job.key, lambda backend: self._send(backend, body, rid)
            )
        except OrchestratorError as exc:
            errors[index] = exc
            return
        finally:
            self.release_rid(rid)
        self._counters.failovers += len(failovers)
        done[index] = Done(
            output=output, server=backend.url, rid=rid, failovers=failovers, prefill=prefill
        )

    async def _coalesce(self, job: Job) -> dict[str, Any] | None:
        if self._coalescer is None:
            return None
        return await self._coalescer.join(
            job.key, job.ids, self._prefill, prefix_cap=job.prefix_cap
        )

    async def _prefill(self, key: str, prefix: list[int], shared_by: int) -> dict[str, Any]:
        rid = self.claim_rid(None)
        body = {"input_ids": prefix, "sampling_params": {"max_new_tokens": 0}, "rid": rid}
        try:
            output, backend, _ = await self.pool.run(
                key, lambda backend: self._send(backend, body, rid)
            )
        finally:
            self.release_rid(rid)
        self._counters.prefills += 1
        usage = usage_from_meta(output.get("meta_info", {}))
        return {
            "server": backend.url,
            "rid": rid,
            "prefix_tokens": len(prefix),
            "shared_by": shared_by,
            "prompt_tokens": usage.prompt_tokens,
            "cached_tokens": usage.cached_tokens,
        }

    async def send(self, backend: Backend, body: dict[str, Any], rid: str) -> Any:
        """Send one body to one server: no fan-out, no failover (sessions), but counted and
        aborted when cancelled."""
        self._in_flight[rid] = backend
        try:
            return await self._send(backend, body, rid)
        finally:
            self.release_rid(rid)

    async def _send(self, backend: Backend, body: dict[str, Any], rid: str) -> Any:
        self._in_flight[rid] = backend
        self._counters.requests += 1
        try:
            output = await backend.generate(body)
        except anyio.get_cancelled_exc_class():
            await self._abort_quietly(backend, rid)
            raise
        self._counters.count(output)
        return output

    async def stream(self, job: Job) -> AsyncGenerator[tuple[dict[str, Any], Backend], None]:
        """Yield each raw chunk of a streamed job, with its server.

        Fails over only before the first chunk: after that, the output so far belongs to
        one server's sampling and cannot be continued elsewhere. Closing the iterator or
        cancelling the consumer before the last chunk aborts the rid.
        """
        failovers: list[Failover] = []
        rid = self.claim_rid(job.wanted_rid)
        body = {**job.body, "rid": rid}
        try:
            await self._coalesce(job)
            for backend in self.pool.ranked(job.key):
                self._in_flight[rid] = backend
                self._counters.requests += 1
                chunks = backend.stream(body)
                started = finished = False
                try:
                    async for chunk in chunks:
                        started = True
                        finished = chunk.get("meta_info", {}).get("finish_reason") is not None
                        if finished:
                            self._counters.count(chunk)
                        yield chunk, backend
                    return
                except RuntimeUnavailable as exc:
                    if started:
                        raise
                    self.pool.mark_down(backend, exc)
                    self._counters.failovers += 1
                    failovers.append(Failover(server=backend.url, error=str(exc)))
                except (GeneratorExit, anyio.get_cancelled_exc_class()):
                    if not finished:
                        await self._abort_quietly(backend, rid)
                    raise
                finally:
                    with anyio.CancelScope(shield=True):
                        await chunks.aclose()
            tried = "; ".join(f"{f.server}: {f.error}" for f in failovers)
            raise RuntimeUnavailable(
                f"every SGLang server failed: {tried}", runtime="sglang", request=body
            )
        finally:
            self.release_rid(rid)

    async def _abort_quietly(self, backend: Backend, rid: str) -> None:
        """Abort ``rid`` as cleanup of a cancelled job: shielded, bounded, and a failure is
        logged (with its cause) rather than raised over the cancellation that caused it."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._abort_timeout_s):
            try:
                await backend.abort(rid)
                self._counters.aborts += 1
            except RuntimeFailure as exc:
                _log.warning("could not abort %s on %s: %s", rid, backend.url, exc)
