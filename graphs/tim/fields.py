"""TIM on runtimes without sequence handles (SGLang): the structure, driven field by field.

The orchestrator writes the JSON skeleton (braces, keys, commas) itself and asks the model
for one field at a time — one request per field, constrained by that field's own schema
(SGLang's ``json_schema``): a ``thought``/``conclusion``/``answer`` string, a ``tool_name``
enum, the chosen tool's ``parameters``. Where the model decides the structure (use a tool?
spawn subtasks? another task in this list?), one request with a regex over the allowed
continuations decides it. Every request's prompt is the working memory so far, so a tool
result and a prune are prompt edits: the result is inserted text, a pruned list is simply
absent from the next prompt (the memory's :meth:`context`). Prefix caching on the server
reuses what did not change. The run reports this fallback.
"""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator import (
    Capability,
    GenerateRequest,
    Grammar,
    Prompt,
    SamplingParams,
)

from .schema import TaskShape, grammar_for, string_schema
from .session import Session

__all__ = ["FIELDS_FALLBACK", "drive_fields"]

FIELDS_FALLBACK = (
    "tim: runtime without sequence handles; structure driven field by field, "
    "tool results and pruning as prompt edits"
)


async def drive_fields(session: Session) -> None:
    """Write the whole response, one field request at a time."""
    await session.insert('{"reasoning": [')
    await _task_list(session, session.config.shape, depth=1)
    await session.insert(', "answer": ')
    await _value(session, string_schema(session.config.max_field_chars))
    await session.insert("}")


async def _task_list(session: Session, shape: list[TaskShape] | None, depth: int) -> None:
    """Tasks of one list, then ``]``; the model decides the length unless ``shape`` does."""
    index = 0
    while True:
        await session.insert("{" if index == 0 else " {")
        await _task(session, shape[index] if shape is not None else None, depth)
        index += 1
        if shape is not None:
            more = index < len(shape)
        elif index >= session.config.max_list_tasks:
            more = False
        else:
            more = await _choose(session, [",", "]"]) == ","
            if not more:
                return  # the chosen "]" is in the response already
        if not more:
            await session.insert("]")
            return
        if shape is not None:
            await session.insert(",")


async def _task(session: Session, shape: TaskShape | None, depth: int) -> None:
    config = session.config
    await session.insert('"thought": ')
    await _value(session, string_schema(config.max_field_chars))
    if shape is not None:
        fields = (["tooluse"] if shape.tool else []) + (
            ["subtasks"] if shape.subtasks is not None else []
        )
        for name in fields:
            await _field(session, name, shape, depth)
    else:
        options = (["tooluse"] if session.tools else []) + (
            ["subtasks"] if depth < config.max_depth else []
        )
        while options:
            chosen = await _choose(session, [f', "{o}": ' for o in options] + [', "conclusion": '])
            name = chosen[3:-3]
            if name == "conclusion":
                await _value(session, string_schema(config.max_field_chars))
                await session.insert("}")
                return
            await _field(session, name, None, depth, key_written=True)
            options = options[options.index(name) + 1 :]
    await session.insert(', "conclusion": ')
    await _value(session, string_schema(config.max_field_chars))
    await session.insert("}")


async def _field(
    session: Session, name: str, shape: TaskShape | None, depth: int, key_written: bool = False
) -> None:
    if not key_written:
        await session.insert(f', "{name}": ')
    if name == "subtasks":
        await session.insert("[")
        await _task_list(session, shape.subtasks if shape is not None else None, depth + 1)
        await session.observe_closed_lists()
        return
    names = [shape.tool] if shape is not None and shape.tool else sorted(session.tools)
    await session.insert('{"tool_name": ')
    tool = session.tools[json.loads(await _value(session, {"enum": names}))]
    await session.insert(', "parameters": ')
    await _value(session, tool.parameters)
    call = session.take_tool_call()
    assert call is not None
    await session.insert(', "tool_result": ')
    await session.insert(await session.run_tool(call) + "}")


async def _value(session: Session, schema: dict[str, Any]) -> str:
    """One request for one field's value, under that field's schema; its raw JSON text."""
    grammar = grammar_for(schema, session.config.whitespace)
    return await _request(session, grammar, session.config.max_field_tokens)


async def _choose(session: Session, options: list[str]) -> str:
    """One request choosing among structural continuations; returns the chosen text."""
    regex = "|".join(re.escape(o) for o in options)
    text = await _request(session, Grammar(regex=f"({regex})"), max(len(o) for o in options) * 2)
    if text not in options:
        raise ValueError(f"expected one of {options}, got {text!r}")
    return text


async def _request(session: Session, grammar: Grammar, max_tokens: int) -> str:
    ctx, transcript = session.ctx, session.transcript
    node = session.builder.current or session.response
    memory = session.memory
    if memory is not None and hasattr(memory, "bind"):  # a working-memory plugin
        prompt = await memory.context(node, ctx)
    else:
        prompt = Prompt(token_ids=tuple(transcript.token_ids))
    sampling = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=session.config.temperature,
        top_p=session.config.top_p,
        seed=ctx.seed_for(node.id, len(node.token_ids)),
        grammar=grammar if Capability.GRAMMAR in session.rt.capabilities else None,
    )
    request = GenerateRequest(prompt=prompt, sampling=sampling)
    result = await ctx.generate(node, request, runtime=session.runtime)
    completion = result.completions[0]
    text = await session.take_generated(completion.token_ids, prompt.token_ids or ())
    await session.parse(text)
    return text
