"""The ``tim`` graph: TIM's recursive task structure as one constrained decode.

TIM / TIMRUN ("Beyond Context Limits: Subconscious Threads for Long-Horizon Reasoning",
arXiv 2507.16784, Luo et al.; methods.md §1). The response is one JSON document,
``{reasoning: [Task], answer}`` with ``Task = {thought, tooluse?, subtasks?: [Task],
conclusion}``, decoded under its JSON schema and parsed into run-graph nodes as it grows.
Tools run when their ``parameters`` close and their result is encoded into the same
sequence; completed subtask lists are pruned from the working memory by the run's memory
plugin (``tim_pruning`` by default, buffer ``B`` = 2).

Runtimes with sequence handles, token injection and KV range drops get the single decode
(:mod:`.decode`); others get the documented field-by-field fallback (:mod:`.fields`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator import BudgetExhausted, Capability, ChatMessage, Prompt, ToolSpec

from .builder import ResponseAttrs
from .config import TimConfig, system_prompt
from .decode import decode
from .fields import FIELDS_FALLBACK, drive_fields
from .schema import document_schema
from .session import Session
from .transcript import Transcript

if TYPE_CHECKING:
    from orchestrator import RunContext

__all__ = ["DECODE_CAPABILITIES", "TimGraph"]

#: What the single decode needs: a live sequence, tokens forced into it, KV ranges dropped.
DECODE_CAPABILITIES = (
    Capability.SEQUENCE_HANDLES | Capability.TOKEN_INJECTION | Capability.KV_RANGE_DROP
)


class TimGraph:
    def __init__(self, config: TimConfig) -> None:
        self.config = config

    async def run(self, ctx: RunContext) -> str | None:
        config = self.config
        runtime = ctx.default_runtime
        rt = ctx.runtime(runtime)
        tools = _tools(ctx, config)
        memory = ctx.component("memory", config.default_memory)
        messages = (
            ChatMessage(role="system", content=system_prompt(config, tools)),
            ChatMessage(role="user", content=ctx.question),
        )
        transcript = Transcript(rt, await rt.render(Prompt(messages=messages)))
        if hasattr(memory, "bind"):
            memory.bind(transcript)
        single = DECODE_CAPABILITIES in rt.capabilities
        if not single:
            ctx.report_fallback(FIELDS_FALLBACK)
        if Capability.GRAMMAR not in rt.capabilities:
            ctx.report_fallback("tim: runtime without grammar; the JSON is decoded unconstrained")
        attrs = ResponseAttrs(driver="decode" if single else "fields")
        response = ctx.add_node("response", [ctx.root], attrs)
        session = Session(
            ctx, config, runtime, {t.name: t for t in tools}, memory, transcript, response
        )
        schema = document_schema(tools, shape=config.shape, max_chars=config.max_field_chars)
        try:
            async with ctx.running(response):
                try:
                    if single:
                        await decode(session, schema)
                    else:
                        await drive_fields(session)
                except BaseException as exc:
                    if not await session.finish(exc):
                        raise
                else:
                    await session.finish()
        except BudgetExhausted as exc:
            ctx.stopped_by = exc
        finally:
            session.publish()
        return ctx.answer


def _tools(ctx: RunContext, config: TimConfig) -> list[ToolSpec]:
    """The tools offered: registered through the tool hook, filtered by ``config.tools``.

    :raises KeyError: naming a configured tool nobody registered.
    """
    registered: dict[str, ToolSpec] = dict(ctx.plugins.registry.items["tool"])
    if config.tools is None:
        return [registered[name] for name in sorted(registered)]
    missing = [name for name in config.tools if name not in registered]
    if missing:
        raise KeyError(f"no tool named {missing[0]!r} (have: {', '.join(sorted(registered))})")
    return [registered[name] for name in config.tools]
