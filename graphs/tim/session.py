"""What both TIM drivers share: the transcript, the parser, the node builder, tools, memory.

Text enters the response in two ways, and both go through here: tokens the model generated
(:meth:`Session.take_generated`) and text the orchestrator inserts — tool results, and in the
field-by-field fallback the JSON punctuation and keys (:meth:`Session.insert`). Either way it
is appended to the transcript and fed to the parser, so structure is only ever parsed from
generated spans and orchestrator text, never from the user's question.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator import Node, Runtime, SequenceHandle, ToolSpec

from .builder import Builder, ToolCall
from .jsonstream import JsonStream
from .transcript import Transcript, token_pieces

if TYPE_CHECKING:
    from orchestrator import RunContext

    from .config import TimConfig

__all__ = ["Session"]


class Session:
    """One TIM response being built.

    :ivar handle: the live sequence on runtimes with handles (``None`` in the fallback).
    :ivar injected_tokens: tokens of tool results encoded into the sequence.
    """

    def __init__(
        self,
        ctx: RunContext,
        config: TimConfig,
        runtime: str,
        tools: Mapping[str, ToolSpec],
        memory: Any,
        transcript: Transcript,
        response: Node,
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.runtime = runtime
        self.rt: Runtime = ctx.runtime(runtime)
        self.tools = dict(tools)
        self.memory = memory
        self.transcript = transcript
        self.response = response
        self.parser = JsonStream()
        self.builder = Builder(ctx, response, lambda: transcript.document)
        self.handle: SequenceHandle | None = None
        self.injected_tokens = 0
        self.tool_calls = 0
        #: Tokens the single decode generated into its handle.
        self.generated_tokens = 0

    @property
    def done(self) -> bool:
        return self.parser.done

    async def take_generated(self, ids: Sequence[int], before: Sequence[int]) -> str:
        """Append generated tokens (``before``: the tokens preceding them) to the transcript;
        returns their text (not yet parsed: see :meth:`parse`)."""
        pieces = await token_pieces(self.rt, ids, before)
        eos = self.rt.eos_token_ids
        pieces = ["" if token in eos else piece for token, piece in zip(ids, pieces, strict=True)]
        return self.transcript.add(ids, pieces)

    async def parse(self, text: str) -> None:
        """Feed text that is already in the transcript to the parser and the node builder."""
        if text and not self.parser.done:
            await self.builder.handle(self.parser.feed(text))

    async def insert(self, text: str) -> None:
        """Insert orchestrator text into the response (and the live sequence), then parse it."""
        ids = await self.transcript.inject(text, self.handle)
        self.injected_tokens += len(ids)
        await self.parse(text)

    async def observe_closed_lists(self) -> None:
        """Hand every subtask list that closed since the last call to the memory."""
        closed, self.builder.subtasks_closed = self.builder.subtasks_closed, []
        if self.memory is None:
            return
        for node in closed:
            await self.memory.observe(node, self.ctx, self.handle)

    async def run_tool(self, call: ToolCall) -> str:
        """Run a tool whose parameters closed; its result as the JSON text to inject.

        A failing tool's error becomes the result (``{"error": "..."}``) and is recorded on
        its node, so the model can react; under ``on_error="fail_fast"`` it ends the run.
        """
        self.tool_calls += 1
        spec = self.tools.get(call.name)
        try:
            if spec is None:
                raise LookupError(f"no tool named {call.name!r}")
            params = (
                call.parameters if isinstance(call.parameters, dict) else {"value": call.parameters}
            )
            with anyio.fail_after(self.config.tool_timeout):
                value = await spec.call(params)
        except Exception as exc:
            if self.ctx.config.on_error == "fail_fast":
                raise
            call.node.error = f"{type(exc).__name__}: {exc}"
            value = {"error": call.node.error}
        # TIM: tool responses arrive "as dumped JSON dictionary strings".
        result = value if isinstance(value, dict) else {"result": value}
        return json.dumps(result)

    def take_tool_call(self) -> ToolCall | None:
        calls = self.builder.tool_calls
        return calls.pop(0) if calls else None

    async def finish(self, exc: BaseException | None = None) -> bool:
        """Close the nodes still open; see :meth:`Builder.close_all`."""
        return await self.builder.close_all(exc)

    def publish(self) -> None:
        """Record the response's text and the working-memory figures on the node and run."""
        transcript = self.transcript
        self.response.text = transcript.document
        attrs = self.response.attrs
        pruned = list(getattr(self.memory, "pruned", ()))
        if attrs is not None:
            attrs.peak_kv_tokens = transcript.peak_tokens  # type: ignore[attr-defined]
            attrs.reencoded_tokens = [r.edit.reencoded_tokens for r in pruned]  # type: ignore[attr-defined]
        self.ctx.meta["tim"] = {
            "driver": getattr(attrs, "driver", None),
            "complete": self.parser.done,
            "peak_kv_tokens": transcript.peak_tokens,
            "final_kv_tokens": len(transcript),
            "prompt_tokens": len(transcript.prompt_ids),
            "document_chars": len(transcript.document),
            "injected_tokens": self.injected_tokens,
            "generated_tokens": self.generated_tokens,
            "encoded_tokens": transcript.encoded_tokens,
            "kv_drops": transcript.drops,
            "tool_calls": self.tool_calls,
            "prunes": [
                {
                    "node": r.node_id,
                    "on_kv": r.on_kv,
                    "dropped_tokens": r.edit.dropped_tokens,
                    "reencoded_tokens": r.edit.reencoded_tokens,
                    "live_tokens": r.edit.live_tokens,
                }
                for r in pruned
            ],
        }
