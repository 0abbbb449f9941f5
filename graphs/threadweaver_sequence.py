"""The growing context of one ThreadWeaver run, on a live handle or as token-id prompts.

The official controller keeps a token list and sends every step as a new request, relying on
the engine's prefix cache. Here the same token list is kept, and on a runtime with
``Capability.SEQUENCE_HANDLES`` it is also held by a live handle: a fork shares its KV
(``SequenceHandle.fork``), each thread extends its own header, and the join continues on
thread 1's handle, whose KV already holds the context, header 1 and thread 1 — only threads
2..N and the inserted text are encoded again, exactly what the paper's text-level join costs
with a prefix cache (methods.md §2, "join cost"; splicing thread KV at shifted positions would
not be faithful to training). Without handles every step is a token-id request, which the
runtime's prefix cache serves (``Capability.PREFIX_SHARING``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import anyio

from orchestrator import (
    Capability,
    Completion,
    GenerateRequest,
    GraphError,
    Node,
    Prompt,
    SamplingParams,
    SequenceHandle,
)

from .threadweaver_format import split_tags

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["WeaveSequence"]


class WeaveSequence:
    """Token ids (prompt + response), the response text, and the handle holding them.

    :ivar ids: every token of the context, in order.
    :ivar response: the response's text: generated spans and orchestrator-inserted text only,
        the one place outlines are parsed from.
    :ivar inserted_tokens: tokens the orchestrator inserted (headers, closes, continuations).
    """

    def __init__(
        self,
        ctx: RunContext,
        runtime: str,
        prompt_ids: Sequence[int],
        tag_ids: Mapping[str, int],
    ) -> None:
        self._ctx = ctx
        self._runtime_name = runtime
        self._rt = ctx.runtime(runtime)
        self._tag_ids = dict(tag_ids)
        self.ids: list[int] = list(prompt_ids)
        self.prompt_len = len(self.ids)
        self.response = ""
        self.inserted_tokens = 0
        self.handle: SequenceHandle | None = None
        self._live: list[SequenceHandle] = []

    @property
    def uses_handles(self) -> bool:
        return Capability.SEQUENCE_HANDLES in self._rt.capabilities

    @property
    def response_tokens(self) -> int:
        return len(self.ids) - self.prompt_len

    async def open(self) -> None:
        """Prefill the prompt into a live handle (on runtimes with handles)."""
        if self.uses_handles:
            self.handle = await self._rt.open_sequence(Prompt(token_ids=tuple(self.ids)))  # type: ignore[attr-defined]
            self._live.append(self.handle)

    async def release(self) -> None:
        """Release every handle still held; shielded, so it also runs on cancellation."""
        with anyio.CancelScope(shield=True):
            while self._live:
                await self._live.pop().release()
        self.handle = None

    async def encode(self, text: str) -> list[int]:
        """Token ids of orchestrator-inserted ``text``: a tag with a known special id becomes
        that id (as a ThreadWeaver tokenizer encodes it), the rest is tokenized as text."""
        ids: list[int] = []
        plain = ""
        for piece in split_tags(text):
            if piece in self._tag_ids:
                if plain:
                    ids.extend(await self._rt.tokenize(plain))
                    plain = ""
                ids.append(self._tag_ids[piece])
            else:
                plain += piece
        if plain:
            ids.extend(await self._rt.tokenize(plain))
        return ids

    async def insert(self, text: str) -> int:
        """Append orchestrator text to the context (and its handle); returns its token count."""
        ids = await self.encode(text)
        await self.append(ids, text)
        self.inserted_tokens += len(ids)
        return len(ids)

    async def append(self, ids: Sequence[int], text: str) -> None:
        self.ids.extend(ids)
        self.response += text
        if self.handle is not None and ids:
            await self.handle.extend(ids)

    async def decode(self, node: Node, sampling: SamplingParams) -> Completion:
        """Continue the context for ``node``; the completion is appended to it."""
        if self.handle is not None:
            before = len(self.handle.token_ids)
            completion = await self._ctx.generate_on(
                node, self.handle, sampling, runtime=self._runtime_name
            )
            await self._trim(self.handle, before, completion)
        else:
            completion = await self._request(node, self.ids, sampling)
        self.ids.extend(completion.token_ids)
        self.response += completion.text
        return completion

    async def fork(self, n: int) -> list[SequenceHandle | None]:
        """``n`` branches of the current context: handles sharing its KV, or ``None`` each
        (the branch is then served by token-id requests)."""
        if self.handle is None:
            return [None] * n
        branches = await self.handle.fork(n)
        self._live.extend(branches)
        return list(branches)

    async def decode_branch(
        self,
        node: Node,
        branch: SequenceHandle | None,
        header_ids: Sequence[int],
        sampling: SamplingParams,
    ) -> Completion:
        """Generate one thread: the context plus its header, on its own branch."""
        if branch is None:
            return await self._request(node, [*self.ids, *header_ids], sampling)
        await branch.extend(header_ids)
        before = len(branch.token_ids)
        completion = await self._ctx.generate_on(node, branch, sampling, runtime=self._runtime_name)
        await self._trim(branch, before, completion)
        return completion

    async def _trim(self, handle: SequenceHandle, before: int, completion: Completion) -> None:
        """Make ``handle`` hold exactly its context plus the completion's tokens.

        A runtime may keep in the sequence a stop it trimmed from the completion (EOS, a
        stop string's tokens); the official controller cuts a thread at EOS, and the model
        must not see an EOS in the middle of its context, so those tokens are dropped.
        """
        held = handle.token_ids[before:]
        extra = len(held) - len(completion.token_ids)
        if extra == 0:
            return
        if extra < 0 or held[: len(completion.token_ids)] != completion.token_ids:
            raise GraphError(
                "the sequence does not hold the tokens its completion returned",
                graph="threadweaver",
            )
        if Capability.KV_RANGE_DROP not in self._rt.capabilities:
            raise GraphError(
                f"the sequence kept {extra} trimmed stop token(s) and cannot drop them",
                graph="threadweaver",
            )
        end = before + len(held)
        await handle.drop_range(end - extra, end)

    async def join(
        self, first: SequenceHandle | None, ids: Sequence[int], text: str, skip: int
    ) -> None:
        """Append the joined threads (``ids``/``text``) and release the branches.

        With handles, the join continues on ``first`` (thread 1's branch), which already
        holds the first ``skip`` of ``ids``; ``first=None`` (thread 1 failed) continues on
        the old main handle, which then encodes all of ``ids``.
        """
        keep = first if first is not None else self.handle
        with anyio.CancelScope(shield=True):
            for handle in list(self._live):
                if handle is not keep:
                    self._live.remove(handle)
                    await handle.release()
        if keep is not None:
            if keep is first:
                held = len(keep.token_ids) - len(self.ids)
                if held != skip:
                    raise GraphError(
                        f"thread 1's branch holds {held} tokens past the context, expected {skip}",
                        graph="threadweaver",
                    )
                await keep.extend(ids[skip:])
            else:
                await keep.extend(ids)
        self.handle = keep
        self.ids.extend(ids)
        self.response += text

    async def _request(
        self, node: Node, ids: Sequence[int], sampling: SamplingParams
    ) -> Completion:
        request = GenerateRequest(prompt=Prompt(token_ids=tuple(ids)), sampling=sampling)
        result = await self._ctx.generate(node, request, runtime=self._runtime_name)
        return result.completions[0]
