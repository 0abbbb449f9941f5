"""The two ways the ``parathinker`` graph runs its paths and joins them (see its docstring).

:class:`KvJoin` keeps every path in a live handle forked from the prompt's and reads them all
through one ``view`` (a DAG join over shared segments: nothing re-prefilled). :class:`TextJoin`
runs each path as a request and joins them as text (the paths are prefilled again).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal, Protocol

from orchestrator import (
    Capability,
    ChatMessage,
    Completion,
    GenerateRequest,
    Node,
    PathAttrs,
    Prompt,
    SamplingParams,
    SegmentSpec,
    SequenceHandle,
    SupportsSegments,
    SupportsSequences,
)

if TYPE_CHECKING:
    from orchestrator import RunContext, Runtime

__all__ = ["RECORDED_TOP_LOGPROBS", "KvJoin", "TextJoin", "encode_control"]

#: Top logprobs per summary token kept by ``record_join``.
RECORDED_TOP_LOGPROBS = 20


async def encode_control(rt: Runtime, text: str) -> list[int]:
    """Token ids of orchestrator-inserted control text: a string the runtime lists in its
    ``special_tokens`` becomes that one id (as a ParaThinker tokenizer encodes
    ``<think1>``); the rest is tokenized as text."""
    special: dict[str, int] = dict(getattr(rt, "special_tokens", None) or {})
    names = sorted((s for s in special if s in text), key=len, reverse=True)
    if not names:
        return await rt.tokenize(text) if text else []
    ids: list[int] = []
    for piece in re.split("(" + "|".join(map(re.escape, names)) + ")", text):
        if piece in special:
            ids.append(special[piece])
        elif piece:
            ids.extend(await rt.tokenize(piece))
    return ids


class _Config(Protocol):
    num_paths: int
    path_prefix: str
    path_suffix: str
    summary_prefix: str
    record_join: bool
    max_path_tokens: int
    max_summary_tokens: int
    temperature: float
    top_p: float
    system_prompt: str | None


class _Join:
    kind: Literal["kv", "text"]

    def __init__(self, ctx: RunContext, runtime: str, config: _Config) -> None:
        self.ctx, self.name, self.config = ctx, runtime, config
        self.rt = ctx.runtime(runtime)
        self.prompt_length = 0

    def prompt(self) -> Prompt:
        messages = [ChatMessage(role="user", content=self.ctx.question)]
        if self.config.system_prompt:
            messages.insert(0, ChatMessage(role="system", content=self.config.system_prompt))
        return Prompt(messages=tuple(messages))

    async def control(self, template: str, index: int | None = None) -> list[int]:
        text = template.format(i=index) if index is not None else template
        return await encode_control(self.rt, text)

    def sampling(self, node: Node, max_new_tokens: int, suffix: str = "") -> SamplingParams:
        """A path stops where it writes its closer (cut: the graph forces the closer); the
        summary runs to EOS or its length limit."""
        details = suffix == "" and self.config.record_join  # the summary's, when recorded
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=self.ctx.seed_for(node.id),
            stop=(suffix,) if suffix else (),
            logprobs=details,
            top_logprobs=RECORDED_TOP_LOGPROBS if details else 0,
            return_entropy=details,
        )

    def record(
        self, segments: list[tuple[list[int], int]], opener: list[int], summary: Completion
    ) -> None:
        """With ``record_join``: what the summary read, where, and its token distributions
        (``ctx.meta["parathinker"]["join_record"]``), to check the join against a recompute."""
        if not self.config.record_join:
            return
        self.ctx.meta["parathinker"]["join_record"] = {
            "segments": [{"token_ids": ids, "position_offset": at} for ids, at in segments],
            "opener": opener,
            "summary_offset": max(at + len(ids) for ids, at in segments),
            "summary": {
                "token_ids": summary.token_ids,
                "logprobs": summary.logprobs,
                "top_logprobs": summary.top_logprobs,
                "entropies": summary.entropies,
            },
        }

    def suffix(self, node: Node) -> str:
        return self.config.path_suffix.format(i=_index(node))

    def longest(self, done: list[Node]) -> int:
        return max(self.path_length(p) for p in done)

    def path_length(self, node: Node) -> int:
        raise NotImplementedError


def _index(node: Node) -> int:
    attrs = node.attrs
    assert isinstance(attrs, PathAttrs)
    return attrs.index


class KvJoin(_Join):
    """Paths in handles forked from the prompt's; the summary is a view of them all."""

    kind: Literal["kv", "text"] = "kv"

    def __init__(self, ctx: RunContext, runtime: str, config: _Config) -> None:
        super().__init__(ctx, runtime, config)
        self.prompt_handle: SequenceHandle | None = None
        self.paths: dict[str, SequenceHandle] = {}
        self.view: SequenceHandle | None = None

    async def open_prompt(self) -> int:
        rt = self.rt
        assert isinstance(rt, SupportsSequences)
        self.prompt_handle = await rt.open_sequence(self.prompt())
        self.prompt_length = len(self.prompt_handle.token_ids)
        return self.prompt_length

    async def path(self, node: Node) -> None:
        assert self.prompt_handle is not None
        (handle,) = await self.prompt_handle.fork(1)
        self.paths[node.id] = handle
        await handle.extend(await self.control(self.config.path_prefix, _index(node)))
        suffix = self.suffix(node)
        sampling = self.sampling(node, self.config.max_path_tokens, suffix)
        start = len(handle.token_ids)
        completion = await self.ctx.generate_on(node, handle, sampling, runtime=self.name)
        kept = start + len(completion.token_ids)
        if len(handle.token_ids) > kept and Capability.KV_RANGE_DROP in self.rt.capabilities:
            # The runtime kept the cut stop (or EOS) in the sequence: the path is what the
            # completion kept, then the forced closer, as in the text join.
            await handle.drop_range(kept, len(handle.token_ids))
        # Forced, the closer also computes the path's last generated token: a sequence's
        # last token has no KV until something follows it, and a view reads computed KV.
        await handle.extend(await self.control(suffix))

    def path_length(self, node: Node) -> int:
        handle = self.paths.get(node.id)
        return 0 if handle is None else len(handle.token_ids) - self.prompt_length

    def summary_offset(self, done: list[Node]) -> int:
        return self.prompt_length + self.longest(done)

    async def summarize(self, summary: Node, done: list[Node]) -> tuple[int, int]:
        """Generate the summary on a view of the prompt and every path, each path segment at
        the paths' common offset; returns (tokens prefilled, path tokens re-prefilled)."""
        rt = self.rt
        assert isinstance(rt, SupportsSegments) and self.prompt_handle is not None
        offset = self.prompt_length
        segments = [SegmentSpec(handle=self.prompt_handle, start=0, end=offset, position_offset=0)]
        for node in done:
            handle = self.paths[node.id]
            end = len(handle.token_ids)
            segments.append(
                SegmentSpec(handle=handle, start=offset, end=end, position_offset=offset)
            )
        self.view = await rt.view(segments)
        opener = await self.control(self.config.summary_prefix)
        await self.view.extend(opener)
        sampling = self.sampling(summary, self.config.max_summary_tokens)
        completion = await self.ctx.generate_on(summary, self.view, sampling, runtime=self.name)
        placed = [(s.handle.token_ids[s.start : s.end], s.position_offset or 0) for s in segments]
        self.record(placed, opener, completion)
        return len(opener), 0

    async def release(self) -> None:
        """Release the view, the paths and the prompt (idempotent; called shielded)."""
        handles = [self.view, *self.paths.values(), self.prompt_handle]
        for handle in handles:
            if handle is not None:
                await handle.release()


class TextJoin(_Join):
    """Paths as prefix-shared requests; the summary's prompt holds them all as tokens."""

    kind: Literal["kv", "text"] = "text"

    def __init__(self, ctx: RunContext, runtime: str, config: _Config) -> None:
        super().__init__(ctx, runtime, config)
        self.prompt_ids: list[int] = []
        self.paths: dict[str, list[int]] = {}

    async def open_prompt(self) -> int:
        self.prompt_ids = await self.rt.render(self.prompt())
        self.prompt_length = len(self.prompt_ids)
        return self.prompt_length

    async def path(self, node: Node) -> None:
        opener = await self.control(self.config.path_prefix, _index(node))
        suffix = self.suffix(node)
        request = GenerateRequest(
            prompt=Prompt(token_ids=tuple(self.prompt_ids + opener)),
            sampling=self.sampling(node, self.config.max_path_tokens, suffix),
        )
        result = await self.ctx.generate(node, request, runtime=self.name)
        closer = await self.control(suffix)
        self.paths[node.id] = opener + result.completions[0].token_ids + closer

    def path_length(self, node: Node) -> int:
        return len(self.paths.get(node.id, ()))

    def summary_offset(self, done: list[Node]) -> int:
        return self.prompt_length + sum(self.path_length(p) for p in done)

    async def summarize(self, summary: Node, done: list[Node]) -> tuple[int, int]:
        """Generate the summary after the prompt and every path as one token sequence;
        returns (tokens prefilled, path tokens among them)."""
        opener = await self.control(self.config.summary_prefix)
        joined = [t for node in done for t in self.paths[node.id]]
        ids = self.prompt_ids + joined + opener
        request = GenerateRequest(
            prompt=Prompt(token_ids=tuple(ids)),
            sampling=self.sampling(summary, self.config.max_summary_tokens),
        )
        result = await self.ctx.generate(summary, request, runtime=self.name)
        self.record([(self.prompt_ids + joined, 0)], opener, result.completions[0])
        prefill = result.usage.prompt_tokens - result.usage.cached_tokens
        # The prefilled tokens are the prompt's last `prefill` (a cache hit is a prefix).
        first_computed = len(ids) - prefill
        paths_end = self.prompt_length + len(joined)
        reprefilled = max(0, paths_end - max(self.prompt_length, first_computed))
        return prefill, reprefilled

    async def release(self) -> None:
        """Nothing is held: requests free their KV when they end."""
