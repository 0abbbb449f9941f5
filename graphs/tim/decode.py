"""TIM on a runtime with sequence handles: one constrained decode, tools and pruning inside it.

TIMRUN's loop (methods.md §1 (a)): prefill once; decode under the JSON schema; when a
``tooluse``'s ``parameters`` close, pause, run the tool and "extend the KV cache by encoding
[the result] as batches of new input tokens" — here ``SequenceHandle.extend`` on the same
handle: no new request, no re-prefill; when a ``subtasks`` list closes, the memory may drop
an old list's KV range. Decoding resumes on the same handle with the same grammar, whose
matcher the handle carries across the pause.

The pauses are stop strings. ``"tool_result"`` can only be generated as the key that the
schema puts right after ``parameters`` (inside a JSON string a quote is escaped), so it is
exactly where the result goes; ``"conclusion"`` follows every task's fields, so a subtask
list that just closed is pruned before the parent's conclusion is written. Text of the
stopping token past the key is kept if it is only the colon, else cut off again.
"""

from __future__ import annotations

import re

from orchestrator import Capability, Prompt, SamplingParams

from .schema import grammar_for, shape_at
from .session import Session

__all__ = ["CONCLUSION_STOP", "TOOL_STOP", "decode"]

TOOL_STOP = '"tool_result"'
CONCLUSION_STOP = '"conclusion"'


async def decode(session: Session, schema: dict[str, object]) -> None:
    """Generate the whole response on one handle; the handle is released on every path."""
    ctx, rt, transcript = session.ctx, session.rt, session.transcript
    grammar = (
        grammar_for(schema, session.config.whitespace)
        if Capability.GRAMMAR in rt.capabilities
        else None
    )
    handle = await rt.open_sequence(Prompt(token_ids=tuple(transcript.token_ids)))  # type: ignore[attr-defined]
    session.handle = handle
    generated, call = 0, 0
    try:
        while not session.done:
            left = session.config.max_tokens - generated
            if left <= 0 or ctx.stopped_by is not None:
                break
            sampling = SamplingParams(
                max_new_tokens=left,
                temperature=session.config.temperature,
                top_p=session.config.top_p,
                seed=ctx.seed_for(session.response.id, call),
                stop=(TOOL_STOP, CONCLUSION_STOP),
                include_stop=True,
                grammar=grammar,
            )
            call += 1
            before = list(handle.token_ids)
            completion = await ctx.generate_on(session.response, handle, sampling, session.runtime)
            new_ids = handle.token_ids[len(before) :]
            generated += len(new_ids)
            start = len(transcript.document)
            text = await session.take_generated(new_ids, before)
            if completion.matched_stop == TOOL_STOP and TOOL_STOP in text:
                cut = text.index(TOOL_STOP) + len(TOOL_STOP)
                await session.parse(text[:cut])
                if session.builder.awaiting_result is not None:
                    await _inject_result(session, text[cut:], start + cut)
                else:
                    await session.parse(text[cut:])
            elif (
                completion.matched_stop == CONCLUSION_STOP
                and (member := _last_member(text, CONCLUSION_STOP)) is not None
            ):
                await session.parse(text[:member])
                if _misses_forced_list(session):
                    await transcript.retract(start + member, handle)
                    await session.insert(', "subtasks": [')
                else:
                    await session.parse(text[member:])
            else:
                await session.parse(text)
            await session.observe_closed_lists()
            if completion.finish_reason != "stop" or completion.matched_stop not in (
                TOOL_STOP,
                CONCLUSION_STOP,
            ):
                break  # EOS, the length limit, or an abort: the response ends here
    finally:
        session.generated_tokens = generated
        session.handle = None
        await handle.release()


async def _inject_result(session: Session, overshoot: str, key_end: int) -> None:
    """Run the pending tool and encode its result right after the ``"tool_result"`` key."""
    call = session.take_tool_call()
    if call is None:
        raise RuntimeError("a tool_result key came before its tool's parameters closed")
    result = await session.run_tool(call)
    if set(overshoot) <= set(" \t\n\r:") and overshoot.count(":") <= 1:
        await session.parse(overshoot)
        # no colon yet: write it; a bare colon: add the space the JSON separator has
        prefix = ": " if ":" not in overshoot else (" " if overshoot.endswith(":") else "")
        await session.insert(prefix + result)
        return
    # The stopping token ran into the value: cut back to the key and write the colon here.
    await session.transcript.retract(key_end, session.handle)
    await session.insert(": " + result)


def _last_member(text: str, key: str) -> int | None:
    """Where the last ``, "key"`` member of ``text`` starts (at its comma)."""
    matches = list(re.finditer(r",\s*" + re.escape(key), text))
    return matches[-1].start() if matches else None


def _misses_forced_list(session: Session) -> bool:
    """Whether the open task is about to conclude without the subtask list its shape forces
    (the grammar leaves forced lists optional, see :mod:`.schema`)."""
    task = session.builder.open_task()
    if task is None:
        return False
    path, node = task
    shape = shape_at(session.config.shape, path)
    if shape is None or shape.subtasks is None:
        return False
    return all(child.kind != "subtasks" for child in session.ctx.graph.children(node.id))
