"""The ``parathinker`` graph: P isolated reasoning paths, then one summary that reads them all.

ParaThinker (arXiv 2509.04475; ``MobileLLM/ParaThinker``, methods.md §8):

1. Stage 1: ``num_paths`` paths from one prompt, path ``i`` opened by its control text
   (``<think{i}>``); each attends to the prompt and to itself only, and every path's
   positions restart at the same offset, just after the prompt.
2. Stage 2: one summary (opened by ``<summary>``) that attends to the prompt and to *all*
   paths, reusing their KV (no re-prefill), its own tokens starting at the longest path's end
   (0-based position ``len(prompt) + max_i len(path_i)``, the paper's "longest path end + 1").

On a runtime with ``SEQUENCE_HANDLES``, ``TOKEN_INJECTION`` and ``SHARED_SEGMENTS`` (the
embedded runtime) the join is a DAG over shared segments: the prompt is prefilled once into
a handle and forked P times, so every path sits at offset ``len(prompt)``; the summary is a
``view`` of the prompt and each path's tokens, each segment at its own position, which
computes only the summary's own tokens. Elsewhere the join is text (reported as a fallback):
each path is a request on the prompt's token ids (prefix-shared), and the summary's prompt
is the prompt plus every path in order, so the paths are prefilled again at sequential
positions; ``SummaryAttrs.reprefilled_tokens`` counts the path tokens the runtime had to
compute again.

Nodes: one ``path`` node per path (``PathAttrs(index, position_offset)``; its text is what the
path generated), one ``summary`` node whose parents are the finished paths
(``SummaryAttrs(position_offset, reprefilled_tokens)``). ``ctx.meta["parathinker"]`` records
the join, the offsets, each path's length and the summary's prefill tokens. The answer is the
final answer stated in the summary (:func:`extract_answer`), else the summary's text.

Parameters: ``num_paths`` (P, default 4; the paper trains up to 8 and tests 16),
``path_prefix`` / ``path_suffix`` / ``summary_prefix`` (the paper's control tokens, ``{i}`` =
path index from 1; encoded as a special token where the runtime's ``special_tokens`` knows
the string, otherwise as text), ``record_join`` (keep, in ``ctx.meta``, the segments the
summary read with their offsets and the summary's logprobs, top-20 logprobs and entropies),
``max_path_tokens``, ``max_summary_tokens``, ``temperature``,
``top_p``, ``system_prompt``, ``join`` (``auto``, ``kv`` or ``text``), ``runtime``. Not done:
the learned per-path segment embedding (a model-side feature of ParaThinker's modified
model; no runtime here has it, and an untrained model has none). Unspecified, chosen here:
the sampling defaults; that the closer is always forced: a path stops where it writes
``path_suffix`` (cut), or at EOS or its length limit, and the graph appends the closer (so
every path token has KV before the view reads it); and that a budget exhausted during the
paths skips the summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import anyio
from orchestrator.plugins.scorers.answers import extract_answer
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import (
    BudgetExhausted,
    Capability,
    CapabilityMissing,
    GraphSpec,
    Node,
    NodeStatus,
    PathAttrs,
    SummaryAttrs,
    hookimpl,
)

from .parathinker_join import KvJoin, TextJoin, encode_control

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["KV_CAPABILITIES", "ParaThinkerConfig", "ParaThinkerGraph", "encode_control"]

KV_CAPABILITIES = (
    Capability.SEQUENCE_HANDLES | Capability.TOKEN_INJECTION | Capability.SHARED_SEGMENTS
)


class ParaThinkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_paths: int = Field(4, ge=1)
    path_prefix: str = "<think{i}>"
    path_suffix: str = Field("</think{i}>", min_length=1)
    summary_prefix: str = Field("<summary>", min_length=1)
    #: Record what the summary read and its token distributions (for checks; see the joins).
    record_join: bool = False
    max_path_tokens: int = Field(256, ge=1)
    max_summary_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    system_prompt: str | None = None
    join: Literal["auto", "kv", "text"] = "auto"
    runtime: str | None = None


class ParaThinkerGraph:
    def __init__(self, config: ParaThinkerConfig) -> None:
        self.config = config

    async def run(self, ctx: RunContext) -> str | None:
        config = self.config
        name = config.runtime or ctx.default_runtime
        rt = ctx.runtime(name)
        kv = KV_CAPABILITIES in rt.capabilities
        if config.join == "kv" and not kv:
            missing = KV_CAPABILITIES & ~rt.capabilities
            raise CapabilityMissing(str(missing.name), runtime=rt.model)
        kv = kv and config.join != "text"
        if not kv:
            ctx.report_fallback(
                "parathinker: text join (no shared segments): the summary re-prefills the "
                "paths at sequential positions"
            )
        join = KvJoin(ctx, name, config) if kv else TextJoin(ctx, name, config)
        try:
            return await self._run(ctx, join)
        finally:
            with anyio.CancelScope(shield=True):
                await join.release()

    async def _run(self, ctx: RunContext, join: KvJoin | TextJoin) -> str | None:
        config = self.config
        offset = await join.open_prompt()
        paths = [
            ctx.add_node("path", [ctx.root], PathAttrs(index=i, position_offset=offset))
            for i in range(1, config.num_paths + 1)
        ]
        try:
            async with anyio.create_task_group() as tg:
                for node in paths:
                    tg.start_soon(self._path, ctx, join, node)
        except* BudgetExhausted as group:
            ctx.stopped_by = next(e for e in group.exceptions if isinstance(e, BudgetExhausted))
        done = [p for p in paths if p.status is NodeStatus.DONE]
        record: dict[str, Any] = {
            "join": join.kind,
            "position_offset": offset,
            "path_tokens": [join.path_length(p) for p in paths],
        }
        ctx.meta["parathinker"] = record
        if not done or ctx.stopped_by is not None:
            return None
        summary = ctx.add_node(
            "summary", done, SummaryAttrs(position_offset=join.summary_offset(done))
        )
        async with ctx.running(summary):
            prefill, reprefilled = await join.summarize(summary, done)
            attrs = summary.attrs
            assert isinstance(attrs, SummaryAttrs)
            attrs.reprefilled_tokens = reprefilled
            record.update(
                summary_offset=attrs.position_offset,
                summary_prefill_tokens=prefill,
                reprefilled_tokens=reprefilled,
            )
        if summary.status is not NodeStatus.DONE:
            return None
        answer = extract_answer(summary.text) or summary.text.strip() or None
        ctx.set_answer(answer, summary)
        return answer

    async def _path(self, ctx: RunContext, join: KvJoin | TextJoin, node: Node) -> None:
        async with ctx.running(node):
            await join.path(node)


@hookimpl
def orchestrator_add_graphs() -> list[GraphSpec]:
    return [
        GraphSpec(
            name="parathinker",
            factory=ParaThinkerGraph,
            config_model=ParaThinkerConfig,
            description="P isolated paths from one prompt, then a summary reading every "
            "path's KV (DAG join over shared segments; text join elsewhere)",
        )
    ]
