"""``summarizing``: older steps of the path replaced by a running summary a model writes.

Recursive summarisation as in Wang et al., "Recursively Summarizing Enables Long-Term Dialogue
Memory in Large Language Models" (arXiv 2308.15022): the memory holds a summary of everything
old, and each update asks a model to fold the previous summary and the newest material into a
new one; the context is then the summary plus the recent material verbatim.

For a node whose path (its ancestors below the question, then itself) has ``L`` nodes, the
last ``keep_steps`` stay verbatim; of the older ``L - keep_steps``, the first
``chunk_steps × ⌊(L - keep_steps) / chunk_steps⌋`` are summarised, so the boundary moves in
whole chunks and one summary is written per chunk, not per step. The summary up to chunk
``c`` is written from the summary up to chunk ``c - 1`` and chunk ``c``'s steps, by a node of
kind ``memory_summary`` under the chunk's last step (so it is budgeted, traced and kept in
the run graph), and cached for every later node of that path. The context is the question
(``system_prompt``, ``prompt_style``) with the assistant turn opened by ``summary_header``,
the summary, a blank line, then the verbatim steps as text: the runtime re-tokenizes it.

Parameters: ``keep_steps`` (2), ``chunk_steps`` (4), ``max_summary_tokens`` (128),
``runtime`` (writes the summaries; None: the router's pick or the run's default),
``template`` (the summariser's user turn, with ``{question}``, ``{summary}`` and ``{steps}``),
``summary_header``, ``system_prompt`` (None), ``prompt_style`` (``chat``). The summary is
greedy. Chosen here, not from the paper: chunking, every default, and that ``observe`` does
nothing: a live KV sequence cannot take new text in the middle, so this memory works on
prompts only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import (
    ChatMessage,
    ComponentSpec,
    GenerateRequest,
    Node,
    NodeStatus,
    OrchestratorError,
    Prompt,
    SamplingParams,
    SequenceHandle,
    hookimpl,
)

from .sliding_window import path_nodes, question_prompt

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["DEFAULT_TEMPLATE", "SummarizingConfig", "SummarizingMemory"]

DEFAULT_TEMPLATE = (
    "Question:\n{question}\n\nSummary of the reasoning so far:\n{summary}\n\n"
    "New reasoning steps:\n{steps}\n\nRewrite the summary so that it covers the new steps "
    "too. Keep every number and intermediate result. Reply with the summary only."
)


class SummarizingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_steps: int = Field(2, ge=0)
    chunk_steps: int = Field(4, ge=1)
    max_summary_tokens: int = Field(128, ge=1)
    runtime: str | None = None
    template: str = DEFAULT_TEMPLATE
    summary_header: str = "Summary of my earlier steps: "
    system_prompt: str | None = None
    prompt_style: Literal["chat", "text"] = "chat"


class SummarizingMemory:
    def __init__(self, config: SummarizingConfig) -> None:
        self.config = config
        self.summaries: dict[str, str] = {}  # last summarised step's id -> summary
        self._locks: dict[str, anyio.Lock] = {}

    def num_summarized(self, path_length: int) -> int:
        """How many of a path's first nodes a summary replaces."""
        older = path_length - self.config.keep_steps
        return max(0, older // self.config.chunk_steps * self.config.chunk_steps)

    async def context(self, node: Node, ctx: RunContext) -> Prompt:
        config = self.config
        path = path_nodes(node, ctx)
        cut = self.num_summarized(len(path))
        verbatim = "".join(n.text for n in path[cut:])
        prefix = verbatim
        if cut:
            summary = await self.summary(path, cut, ctx)
            prefix = f"{config.summary_header}{summary}\n\n{verbatim}"
        return question_prompt(ctx.question, config.system_prompt, config.prompt_style, prefix)

    async def summary(self, path: list[Node], cut: int, ctx: RunContext) -> str:
        """The summary of ``path[:cut]`` (``cut`` a multiple of ``chunk_steps``), written once."""
        key = path[cut - 1].id
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:  # siblings expanding at once share one summary call
            if key not in self.summaries:
                start = cut - self.config.chunk_steps
                previous = await self.summary(path, start, ctx) if start else ""
                self.summaries[key] = await self._write(path, start, cut, previous, ctx)
        return self.summaries[key]

    async def _write(
        self, path: list[Node], start: int, cut: int, previous: str, ctx: RunContext
    ) -> str:
        content = self.config.template.format(
            question=ctx.question,
            summary=previous or "(none yet)",
            steps="".join(n.text for n in path[start:cut]),
        )
        request = GenerateRequest(
            prompt=Prompt(messages=(ChatMessage(role="user", content=content),)),
            sampling=SamplingParams(max_new_tokens=self.config.max_summary_tokens, temperature=0.0),
        )
        node = ctx.add_node("memory_summary", [path[cut - 1]])
        async with ctx.running(node):
            await ctx.generate(node, request, runtime=self.config.runtime)
        if node.status is not NodeStatus.DONE:  # a failure the run isolated: no summary
            raise OrchestratorError(f"summarizing: summary node {node.id} failed: {node.error}")
        return node.text.strip()

    async def observe(
        self, node: Node, ctx: RunContext, handle: SequenceHandle | None = None
    ) -> None:
        """Nothing: summaries replace text in prompts; a live sequence cannot take them."""


@hookimpl
def orchestrator_add_memories() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            name="summarizing",
            factory=SummarizingMemory,
            config_model=SummarizingConfig,
            description="older steps replaced by a running summary written by a model",
        )
    ]
