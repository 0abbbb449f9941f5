"""SGLang sessions for step-wise branching without resending the context.

A non-streaming session (``/open_session``) keeps a tree of requests on the server keyed by
``rid``. A request with ``session_params={"id": S, "rid": parent}`` continues from the
parent's prompt *and output*: the client sends only the new tokens (recorded:
``session_child`` sends one token and reports 26 of 27 prompt tokens cached). This helps
graphs that grow a tree a few tokens at a time over a long context (a beam or MCTS step):
each step sends its few new tokens instead of the whole context. Plain ``generate`` gets the
same cache hits from RadixAttention without server-side state, so the runtime does not use
sessions by itself.

A session lives on one server (the state is there): it does not fail over. Use it as an
async context manager; closing it is shielded from cancellation::

    async with runtime.open_session(key="tree-7") as session:
        root = await session.generate(Prompt(messages=...), sampling, request_id="n0")
        child = await session.generate(" Then", sampling, request_id="n0.0", parent="n0")
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio

from orchestrator import (
    CapabilityMissing,
    ChatMessage,
    GenerateRequest,
    GenerateResult,
    Prompt,
    RuntimeFailure,
    SamplingParams,
)

from .client import SGLangClient
from .dispatch import Done

if TYPE_CHECKING:
    from .pool import Backend
    from .runtime import SGLangRuntime

__all__ = ["SGLangSession"]


class SGLangSession:
    """One server-side session (see the module docstring).

    :param capacity_of_str_len: SGLang's per-session buffer size, in characters.
    """

    def __init__(
        self, runtime: SGLangRuntime, backend: Backend, *, capacity_of_str_len: int
    ) -> None:
        if not isinstance(backend, SGLangClient):
            raise CapabilityMissing("sessions (HTTP servers only)", runtime=runtime.provider)
        self._runtime = runtime
        self._client = backend
        self._capacity = capacity_of_str_len
        self.id: str | None = None

    async def __aenter__(self) -> Self:
        self.id = await self._client.open_session(self._capacity)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session on the server. Idempotent."""
        if self.id is None:
            return
        session_id, self.id = self.id, None
        with anyio.CancelScope(shield=True):
            await self._client.close_session(session_id)

    async def generate(
        self,
        prompt: str | Sequence[int] | Sequence[ChatMessage] | Prompt,
        sampling: SamplingParams | None = None,
        *,
        request_id: str,
        parent: str | None = None,
    ) -> GenerateResult:
        """Generate in the session. ``prompt`` is the whole prompt for a root, and only the
        *new* text or tokens for a child of ``parent`` (which continues after the parent's
        output).

        :param request_id: this node's rid in the session tree (children name it as parent).
        :raises RuntimeFailure: if the session is not open.
        """
        if self.id is None:
            raise RuntimeFailure(
                "the session is not open (use async with)", runtime=self._runtime.provider
            )
        request = GenerateRequest(
            prompt=Prompt.of(prompt), sampling=sampling or SamplingParams(), request_id=request_id
        )
        if request.sampling.n != 1:
            raise RuntimeFailure(
                "session requests take n=1", runtime=self._runtime.provider, request=request
            )
        ids = self._runtime.tokenizer.render(request.prompt)
        body = self._runtime.request_body(ids, request)
        body["session_params"] = (
            {"id": self.id} if parent is None else {"id": self.id, "rid": parent}
        )
        body["rid"] = request_id
        output = await self._runtime.dispatcher.send(self._client, body, request_id)
        done = Done(output=output, server=self._client.url, rid=request_id)
        result = self._runtime.build_result(request, done)
        result.meta["session"] = {"id": self.id, "parent": parent}
        return result
