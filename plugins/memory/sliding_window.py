"""``sliding_window``: the question, then only the most recent tokens (or steps) of the path.

A sliding-window context in the manner of StreamingLLM (Xiao et al., "Efficient Streaming
Language Models with Attention Sinks", arXiv 2309.17453): the initial tokens stay (here the
whole rendered question, which also plays the attention sinks' part) and only the most recent
``max_tokens`` tokens of the reasoning path follow; older ones leave the context.

The path of a node is its ancestors below the question (first-parent chain) and the node
itself, as their exact token ids. :meth:`SlidingWindowMemory.context` returns
``Prompt(token_ids=question + window)``: the question rendered once per runtime with the
memory's ``system_prompt`` / ``prompt_style`` / ``assistant_prefix``, then the last
``max_steps`` path nodes cut to their last ``max_tokens`` tokens (``None``: no limit).
:meth:`~SlidingWindowMemory.observe` with a live sequence handle whose runtime has
``Capability.KV_RANGE_DROP`` drops the tokens beyond the window from its KV (the question
prefix stays); without the capability it reports the fallback and leaves the handle alone.

Parameters: ``max_tokens`` (512), ``max_steps`` (None), ``runtime`` (renders the question;
None: the run's default), ``system_prompt`` (None), ``prompt_style`` (``chat``),
``assistant_prefix`` (""). Chosen here, not from a paper: the window's unit is tokens (a cut
may fall inside a step), and node token ids are reused as they are, so every runtime that
reads the window must share the tokenizer of the one that wrote it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import (
    Capability,
    ChatMessage,
    ComponentSpec,
    Node,
    Prompt,
    SequenceHandle,
    hookimpl,
)

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["SlidingWindowConfig", "SlidingWindowMemory", "path_nodes", "question_prompt"]


def path_nodes(node: Node, ctx: RunContext) -> list[Node]:
    """The node's ancestors below the question, then the node."""
    return [*(n for n in ctx.graph.ancestors(node.id) if n.kind != "question"), node]


def question_prompt(
    question: str,
    system_prompt: str | None,
    prompt_style: Literal["chat", "text"],
    assistant_prefix: str = "",
) -> Prompt:
    """The question as a chat turn (after an optional system turn) or as raw text."""
    if prompt_style == "text":
        return Prompt(text=question, assistant_prefix=assistant_prefix)
    messages = [ChatMessage(role="user", content=question)]
    if system_prompt:
        messages.insert(0, ChatMessage(role="system", content=system_prompt))
    return Prompt(messages=tuple(messages), assistant_prefix=assistant_prefix)


class SlidingWindowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(512, ge=0)
    max_steps: int | None = Field(None, ge=0)
    runtime: str | None = None
    system_prompt: str | None = None
    prompt_style: Literal["chat", "text"] = "chat"
    assistant_prefix: str = ""


class SlidingWindowMemory:
    def __init__(self, config: SlidingWindowConfig) -> None:
        self.config = config
        self._base_ids: dict[str, list[int]] = {}

    async def base_ids(self, ctx: RunContext) -> list[int]:
        """The rendered question: the prefix that never leaves the context."""
        name = self.config.runtime or ctx.default_runtime
        if name not in self._base_ids:
            config = self.config
            prompt = question_prompt(
                ctx.question, config.system_prompt, config.prompt_style, config.assistant_prefix
            )
            self._base_ids[name] = await ctx.runtime(name).render(prompt)
        return self._base_ids[name]

    def window(self, node: Node, ctx: RunContext) -> list[int]:
        """The path's token ids that stay in the context."""
        path = path_nodes(node, ctx)
        if self.config.max_steps is not None:
            path = path[max(0, len(path) - self.config.max_steps) :]
        ids = [t for n in path for t in n.token_ids]
        limit = self.config.max_tokens
        return ids[len(ids) - limit :] if limit is not None and len(ids) > limit else ids

    async def context(self, node: Node, ctx: RunContext) -> Prompt:
        return Prompt(token_ids=tuple(await self.base_ids(ctx) + self.window(node, ctx)))

    async def observe(
        self, node: Node, ctx: RunContext, handle: SequenceHandle | None = None
    ) -> None:
        """Drop what left the window from ``handle``'s KV (the question prefix stays).

        :raises ValueError: if the handle does not start with this memory's question prompt.
        """
        limit = self.config.max_tokens
        if handle is None or limit is None:
            return
        name = node.runtime or self.config.runtime or ctx.default_runtime
        if Capability.KV_RANGE_DROP not in ctx.runtime(name).capabilities:
            ctx.report_fallback(
                f"sliding_window: {name} cannot drop KV ranges; the window applies to prompts"
            )
            return
        base = await self.base_ids(ctx)
        ids = handle.token_ids
        if ids[: len(base)] != base:
            raise ValueError("the handle does not start with this memory's question prompt")
        excess = len(ids) - len(base) - limit
        if excess > 0:
            await handle.drop_range(len(base), len(base) + excess)


@hookimpl
def orchestrator_add_memories() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="sliding_window",
            factory=SlidingWindowMemory,
            config_model=SlidingWindowConfig,
            description="the question, then only the most recent tokens of the path",
        )
    ]
