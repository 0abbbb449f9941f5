"""The ``threadweaver`` graph: sequential → outlines → parallel threads → text join → sequential.

ThreadWeaver ("Adaptive Threading for Efficient Parallel Reasoning in Language Models",
arXiv 2512.07843, Lian et al.), after the official controller ``ParallelBranchingController``
(``facebookresearch/threadweaver`` @ ``2662232``, methods.md §2):

1. SEQUENTIAL: decode until ``</Outlines>`` or EOS. If ``</Outlines>`` ended it and the
   response has outlines after its last ``<Outlines>`` (numbers deduplicated, order kept),
   go PARALLEL; EOS or the length limit ends the run.
2. PARALLEL: one request per outline ``i``, prompt = context + ``"\\n<Thread>\\ni:"``,
   stopping at ``</Thread>`` or EOS, all concurrent (forks share the prefix's KV).
3. JOIN as text in outline order (first header ``"\\n<Thread>\\ni:"``, the others
   ``"<Thread>\\ni:"``); a thread ended by EOS or length is force-closed with
   ``"\\n</Thread>"``. If one was, the controller appends ``"\\n</Parallel>"`` and finishes;
   otherwise ``"\\n"`` (or ``"\\n<Conclusion>\\n"``) and back to SEQUENTIAL.

Two modes. ``tags``: a ThreadWeaver-trained model writes the tags itself. ``prompted``: any
model; the orchestrator drives the outline stage by inserting the tags and asking for one
outline per line, and closes ``</Parallel>`` after the join (an untrained model never
writes it). Each run records its token latency (sequential tokens + the longest thread of
each block) and its total tokens in ``RunResult.meta["threadweaver"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import anyio
from orchestrator.plugins.scorers.answers import extract_answer
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import (
    BudgetExhausted,
    Capability,
    ChatMessage,
    Completion,
    GraphSpec,
    Node,
    Prompt,
    SamplingParams,
    ThreadAttrs,
    hookimpl,
)

from .threadweaver_format import (
    FORCE_CLOSE,
    OUTLINE_OPEN,
    OUTLINES_CLOSE,
    OUTLINES_OPEN,
    PARALLEL_CLOSE,
    PARALLEL_OPEN,
    TAGS,
    THREAD_CLOSE,
    BlockStats,
    Outline,
    TokenLatency,
    closing_text,
    continuation_text,
    join_header,
    parse_outlines,
    prompt_header,
)
from .threadweaver_sequence import WeaveSequence

if TYPE_CHECKING:
    from orchestrator import RunContext

PROMPTED_SYSTEM_PROMPT = (
    "Solve the problem. First list independent parts of the work, one per line; each part "
    "is then worked out on its own; finally combine them. End with: #### <answer>"
)


class ThreadWeaverConfig(BaseModel):
    """Options of the ``threadweaver`` graph.

    ``max_blocks`` is ours: the official controller has only its 32-iteration safety cap.
    Once reached, ``</Outlines>`` no longer stops decoding (the model goes on sequentially).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["tags", "prompted"] = "tags"
    #: Response tokens (generated and inserted), the controller's ``response_length``.
    max_response_tokens: int = Field(1024, ge=1)
    #: Per-thread cap; ``None``: whatever is left of ``max_response_tokens``.
    max_thread_tokens: int | None = Field(None, ge=1)
    #: Parallel blocks at most; ``None``: 8 in ``tags`` mode, 1 in ``prompted`` mode.
    max_blocks: int | None = Field(None, ge=0)
    max_iterations: int = Field(32, ge=1)
    #: Finish the run after a block whose thread ended by EOS or length (the official
    #: controller); ``None``: yes in ``tags`` mode, no in ``prompted`` mode, where an
    #: untrained model never writes ``</Thread>`` and every thread ends that way.
    finish_on_unclosed_thread: bool | None = None
    #: ``False`` is the public RL config's ``no_conclusion=true``.
    conclusion: bool = False
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    system_prompt: str | None = None
    #: Tag → special-token id; ``None``: the runtime's ``special_tokens``, where it has them.
    tag_token_ids: dict[str, int] | None = None
    #: ``prompted`` mode: outlines to ask for, and tokens per outline line.
    num_outlines: int = Field(2, ge=1)
    max_outline_tokens: int = Field(32, ge=1)


class SequentialAttrs(BaseModel):
    """A sequential stretch: ``block`` blocks came before it; ``finish_reason`` ended it."""

    model_config = ConfigDict(extra="forbid")

    block: int = 0
    finish_reason: str | None = None


class ThreadWeaverGraph:
    def __init__(self, config: ThreadWeaverConfig) -> None:
        self.config = config

    async def run(self, ctx: RunContext) -> str | None:
        return await _Weave(ctx, self.config).run()


class _Weave:
    """One run's controller state."""

    def __init__(self, ctx: RunContext, config: ThreadWeaverConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.runtime = ctx.default_runtime
        self.rt = ctx.runtime(self.runtime)
        self.latency = TokenLatency()
        self.tip: list[Node] = [ctx.root]
        self.outlines: list[tuple[Outline, Node]] = []
        self.seq: WeaveSequence | None = None

    async def run(self) -> str | None:
        ctx, config = self.ctx, self.config
        seq = self.seq = WeaveSequence(ctx, self.runtime, await self._prompt(), self._tag_ids())
        if Capability.SEQUENCE_HANDLES not in self.rt.capabilities and (
            Capability.PREFIX_SHARING not in self.rt.capabilities
        ):
            ctx.report_fallback(
                "threadweaver: no prefix sharing; every thread re-prefills the context"
            )
        state = "sequential"
        try:
            await seq.open()
            for _ in range(config.max_iterations):
                if state == "done" or self._left() <= 0:
                    break
                if state == "sequential":
                    state = await self._sequential()
                else:
                    state = await self._parallel()
        except BudgetExhausted as exc:
            ctx.stopped_by = exc
        finally:
            await seq.release()
        ctx.meta["threadweaver"] = {
            **self.latency.as_meta(),
            "prompt_tokens": seq.prompt_len,
            "response_tokens": seq.response_tokens,
            "inserted_tokens": seq.inserted_tokens,
            "response": seq.response,
        }
        answer = extract_answer(seq.response)
        ctx.set_answer(answer, self.tip[-1] if self.tip[-1] is not ctx.root else None)
        return answer

    # -- states --------------------------------------------------------------------------

    async def _sequential(self) -> str:
        ctx, seq = self.ctx, self._seq()
        blocks = len(self.latency.blocks)
        may_fork = blocks < self._max_blocks()
        if self.config.mode == "prompted" and may_fork:
            return await self._outline_stage()
        node = ctx.add_node("sequential", self.tip, SequentialAttrs(block=blocks))
        async with ctx.running(node):
            sampling = self._sampling(node, self._left(), OUTLINES_CLOSE if may_fork else None)
            completion = await seq.decode(node, sampling)
            node.attrs.finish_reason = completion.finish_reason  # type: ignore[union-attr]
        self.tip = [node]
        self.latency.sequential_tokens += len(completion.token_ids)
        if not completion.token_ids:
            return "done"
        state = "sequential"
        if self._matched(completion, OUTLINES_CLOSE):
            outlines = parse_outlines(seq.response)
            if outlines:
                self.outlines = [(o, await self._outline_node(o, node, blocks)) for o in outlines]
                state = "parallel"
        if completion.finish_reason == "length" or self._eos(completion):
            return "done"
        return state

    async def _outline_stage(self) -> str:
        """``prompted`` mode: the orchestrator writes the tags, the model one outline each."""
        ctx, seq, config = self.ctx, self._seq(), self.config
        block = len(self.latency.blocks)
        await seq.insert(f"{PARALLEL_OPEN}\n{OUTLINES_OPEN}\n")
        parent, made = self.tip, {}
        for k in range(1, config.num_outlines + 1):
            newline = k > 1 and not seq.response.endswith("\n")
            await seq.insert(f"{chr(10) if newline else ''}{OUTLINE_OPEN} {k}:")
            node = made[str(k)] = ctx.add_node(
                "outline", parent, ThreadAttrs(number=str(k), block=block)
            )
            async with ctx.running(node):
                sampling = self._sampling(node, min(config.max_outline_tokens, self._left()), "\n")
                completion = await seq.decode(node, sampling)
            self.latency.sequential_tokens += len(completion.token_ids)
        await seq.insert(f"{'' if seq.response.endswith(chr(10)) else chr(10)}{OUTLINES_CLOSE}")
        self.outlines = [(o, made[o.number]) for o in parse_outlines(seq.response)]
        return "parallel" if self.outlines else "sequential"

    async def _parallel(self) -> str:
        ctx, seq, config = self.ctx, self._seq(), self.config
        outlines, self.outlines = self.outlines, []
        block = len(self.latency.blocks)
        left = self._left()
        budget = min(left, config.max_thread_tokens or left)
        threads = [
            ctx.add_node("thread", [node], ThreadAttrs(number=o.number, block=block))
            for o, node in outlines
        ]
        headers = [await seq.encode(prompt_header(o.number)) for o, _ in outlines]
        results: list[Completion | None] = [None] * len(outlines)
        branches = await seq.fork(len(outlines))

        async def grow(i: int) -> None:
            async with ctx.running(threads[i]):
                sampling = self._sampling(threads[i], budget, THREAD_CLOSE)
                results[i] = await seq.decode_branch(threads[i], branches[i], headers[i], sampling)

        async with anyio.create_task_group() as tg:
            for i in range(len(outlines)):
                tg.start_soon(grow, i)
        stats, ids, text, skip, ended = BlockStats(), [], "", 0, False
        for i, ((outline, _), thread) in enumerate(zip(outlines, threads, strict=True)):
            completion = results[i]  # None: the thread failed (isolated); it joins empty
            body_ids = [] if completion is None else list(completion.token_ids)
            body = "" if completion is None else completion.text
            stats.thread_tokens.append(len(body_ids))
            header = join_header(outline.number, i)
            ids += headers[i] if i == 0 else await seq.encode(header)
            ids += body_ids
            text += header + body
            if i == 0:
                skip = len(ids)
            if completion is None or not self._matched(completion, THREAD_CLOSE):
                thread.attrs.force_closed = True  # type: ignore[union-attr]
                ended = True
                ids += await seq.encode(FORCE_CLOSE)
                text += FORCE_CLOSE
        seq.inserted_tokens += len(ids) - sum(stats.thread_tokens)
        self.latency.blocks.append(stats)
        await seq.join(branches[0] if results[0] is not None else None, ids, text, skip)
        self.tip = threads
        finish = config.finish_on_unclosed_thread
        if finish is None:
            finish = config.mode == "tags"
        if (ended and finish) or self._left() <= 0:
            await seq.insert(closing_text(config.conclusion))
            return "done"
        await seq.insert(continuation_text(config.conclusion))
        if config.mode == "prompted":
            await seq.insert(f"{PARALLEL_CLOSE}\n")
        return "sequential"

    # -- helpers -------------------------------------------------------------------------

    async def _outline_node(self, outline: Outline, parent: Node, block: int) -> Node:
        """An outline parsed from ``parent``'s output: recorded, nothing to generate."""
        node = self.ctx.add_node(
            "outline", [parent], ThreadAttrs(number=outline.number, block=block), text=outline.text
        )
        async with self.ctx.running(node):
            pass
        return node

    def _sampling(self, node: Node, max_new: int, stop: str | None) -> SamplingParams:
        tag_id = self._tag_ids().get(stop) if stop is not None else None
        return SamplingParams(
            max_new_tokens=max(1, max_new),
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=self.ctx.seed_for(node.id),
            stop=() if stop is None or tag_id is not None else (stop,),
            stop_token_ids=() if tag_id is None else (tag_id,),
            include_stop=True,
        )

    def _matched(self, completion: Completion, tag: str) -> bool:
        return completion.finish_reason == "stop" and completion.matched_stop in (
            tag,
            self._tag_ids().get(tag),
        )

    def _eos(self, completion: Completion) -> bool:
        return (
            completion.finish_reason == "stop" and completion.matched_stop in self.rt.eos_token_ids
        )

    def _max_blocks(self) -> int:
        if self.config.max_blocks is not None:
            return self.config.max_blocks
        return 1 if self.config.mode == "prompted" else 8

    def _left(self) -> int:
        return self.config.max_response_tokens - self._seq().response_tokens

    def _seq(self) -> WeaveSequence:
        assert self.seq is not None
        return self.seq

    def _tag_ids(self) -> dict[str, int]:
        if self.config.tag_token_ids is not None:
            return self.config.tag_token_ids
        special = getattr(self.rt, "special_tokens", None) or {}
        return {tag: special[tag] for tag in TAGS if tag in special}

    async def _prompt(self) -> list[int]:
        system = self.config.system_prompt
        if system is None and self.config.mode == "prompted":
            system = PROMPTED_SYSTEM_PROMPT
        messages = [ChatMessage(role="user", content=self.ctx.question)]
        if system:
            messages.insert(0, ChatMessage(role="system", content=system))
        return await self.rt.render(Prompt(messages=tuple(messages)))


@hookimpl
def orchestrator_add_graphs() -> list[GraphSpec]:
    return [
        GraphSpec(
            name="threadweaver",
            factory=ThreadWeaverGraph,
            config_model=ThreadWeaverConfig,
            description="ThreadWeaver: outlines fork threads, joined as text (arXiv 2512.07843)",
            node_kinds={
                "outline": ThreadAttrs,
                "thread": ThreadAttrs,
                "sequential": SequentialAttrs,
            },
        )
    ]
