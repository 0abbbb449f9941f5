"""Prefix-aware fan-out: requests that arrive together and share a prefix prefill it once.

RadixAttention reuses a prefix only once it is in the cache. Children sent together while
their common prefix is not cached yet each recompute it (SGLang's default ``fcfs`` policy
admits them in one prefill batch). So when a node forks N children over a P-token prefix,
the runtime first sends the prefix alone with ``max_new_tokens=0`` (recorded: ``prefill_only``),
waits for it, then sends the children together; each child then reports the prefix as
cached, ``cached_tokens >= N * (P - 1)`` in all (SGLang always recomputes a prompt's last
token; recorded: ``fanout_child_cached``). One request with ``n > 1`` needs none of this:
SGLang itself prefills its prompt once, then forks it (``tokenizer_manager``: "Cache the
common prefix for parallel sampling").

The executor calls a runtime once per node, so the children of a fork arrive as separate
concurrent calls, not as one batch. :class:`PrefixCoalescer` therefore groups whatever
arrives together: the first request for an affinity key opens a window, lets the event loop
run twice (siblings started together reach the runtime in the same loop turns), optionally
waits ``window_s`` more, then plans the window with :func:`plan_fanout`, prefills each shared
prefix, and releases everyone. A batch passed to ``generate`` goes through the same window.

Below ``min_prefix_tokens`` the extra round trip costs more than recomputing the prefix, so
short prefixes are not prefilled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from orchestrator import OrchestratorError

__all__ = ["FanoutGroup", "PrefixCoalescer", "common_prefix_length", "plan_fanout"]

_log = logging.getLogger("orchestrator.runtimes.sglang")

#: ``prefill(key, prefix_ids, shared_by)`` sends one prefill and returns what to report.
Prefill = Callable[[str, list[int], int], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class FanoutGroup:
    """Requests (``members``, indices into the batch) sent to one server together.

    ``prefix_ids`` is the shared prefix to prefill first, or empty when there is none worth it.
    """

    key: str
    members: tuple[int, ...]
    prefix_ids: tuple[int, ...] = ()


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix every sequence starts with."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    for position in range(shortest):
        token = first[position]
        if any(s[position] != token for s in sequences):
            return position
    return shortest


def plan_fanout(
    prompts: Sequence[Sequence[int]], keys: Sequence[str], *, min_prefix_tokens: int
) -> list[FanoutGroup]:
    """Group a batch by affinity key and by its first ``min_prefix_tokens`` tokens.

    Members of a group of two or more share at least ``min_prefix_tokens`` tokens, so their
    whole common prefix is prefilled first. Groups come in the order of their first member.

    :param keys: each request's affinity key: requests of one tree go to one server, so
        only they can share a prefilled prefix.
    :raises ValueError: if ``min_prefix_tokens`` < 1 or the lengths differ.
    """
    if min_prefix_tokens < 1:
        raise ValueError(f"min_prefix_tokens must be at least 1, got {min_prefix_tokens}")
    if len(prompts) != len(keys):
        raise ValueError(f"{len(prompts)} prompts but {len(keys)} affinity keys")
    buckets: dict[tuple[str, tuple[int, ...] | int], list[int]] = {}
    for index, (prompt, key) in enumerate(zip(prompts, keys, strict=True)):
        # A prompt shorter than the threshold shares nothing worth prefilling: alone.
        head = tuple(prompt[:min_prefix_tokens]) if len(prompt) >= min_prefix_tokens else index
        buckets.setdefault((key, head), []).append(index)
    groups = []
    for (key, _), members in buckets.items():
        prefix: tuple[int, ...] = ()
        if len(members) > 1:
            shared = common_prefix_length([prompts[i] for i in members])
            prefix = tuple(prompts[members[0]][:shared])
        groups.append(FanoutGroup(key=key, members=tuple(members), prefix_ids=prefix))
    return groups


@dataclass(eq=False)
class _Window:
    prompts: list[list[int]] = field(default_factory=list)
    caps: list[int | None] = field(default_factory=list)
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)
    done: anyio.Event = field(default_factory=anyio.Event)


class PrefixCoalescer:
    """Windows of requests per affinity key (see the module docstring). One per runtime.

    :param window_s: extra wait after the two loop turns, for requests that arrive a little
        apart (another process, a slow router); 0 adds no latency.
    """

    def __init__(self, *, min_prefix_tokens: int, window_s: float = 0.0) -> None:
        self.min_prefix_tokens = min_prefix_tokens
        self.window_s = window_s
        self._open: dict[str, _Window] = {}

    async def join(
        self, key: str, ids: Sequence[int], prefill: Prefill, *, prefix_cap: int | None = None
    ) -> dict[str, Any] | None:
        """Wait until this request's shared prefix (if any) is prefilled.

        :param prefix_cap: the longest prefix of ``ids`` that may be prefilled for it.
        :return: the prefill's report (see :meth:`.dispatch.Dispatcher`), or None when the
            request shared no prefix worth prefilling. A failed prefill is reported
            (``{"error": ...}``) and logged, not raised: the request itself still runs and
            meets the same problem, with its own error.
        """
        window = self._open.get(key)
        leader = window is None
        if window is None:
            window = self._open[key] = _Window()
        index = len(window.prompts)
        window.prompts.append(list(ids))
        window.caps.append(prefix_cap)
        if not leader:
            await window.done.wait()
            return window.reports.get(index)
        try:
            for _ in range(2):
                await anyio.sleep(0)
            if self.window_s:
                await anyio.sleep(self.window_s)
            self._close(key, window)
            await self._prefill(key, window, prefill)
        finally:
            # Whatever happened to the leader (cancelled, failed), the others go on.
            self._close(key, window)
            window.done.set()
        return window.reports.get(index)

    def _close(self, key: str, window: _Window) -> None:
        if self._open.get(key) is window:
            del self._open[key]

    async def _prefill(self, key: str, window: _Window, prefill: Prefill) -> None:
        groups = plan_fanout(
            window.prompts, [key] * len(window.prompts), min_prefix_tokens=self.min_prefix_tokens
        )
        async with anyio.create_task_group() as tg:
            for group in groups:
                caps = [c for i in group.members if (c := window.caps[i]) is not None]
                prefix = list(group.prefix_ids[: min([len(group.prefix_ids), *caps])])
                if len(group.members) > 1 and len(prefix) >= self.min_prefix_tokens:
                    tg.start_soon(self._prefill_group, key, prefix, group.members, window, prefill)

    async def _prefill_group(
        self,
        key: str,
        prefix: list[int],
        members: Sequence[int],
        window: _Window,
        prefill: Prefill,
    ) -> None:
        try:
            report = await prefill(key, prefix, len(members))
        except OrchestratorError as exc:
            _log.warning(
                "prefill of a %d-token prefix for %d requests failed: %s",
                len(prefix),
                len(members),
                exc,
            )
            report = {
                "prefix_tokens": len(prefix),
                "shared_by": len(members),
                "error": f"{type(exc).__name__}: {exc}",
            }
        for index in members:
            window.reports[index] = report
