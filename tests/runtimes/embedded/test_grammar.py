"""Grammar-constrained decoding through xgrammar (issue #3 §4): requests, and handles that
carry their matcher through forced tokens, dropped ranges and later generations."""

from __future__ import annotations

import json
import re

import pytest
from orchestrator.runtimes.embedded import EmbeddedRuntime

from orchestrator import (
    ChatMessage,
    GenerateRequest,
    Grammar,
    Prompt,
    RequestRejected,
    SamplingParams,
)

pytestmark = pytest.mark.anyio

#: TIM's shape (methods.md §1): tasks that recursively hold subtasks, through ``$ref``.
TASK_SCHEMA = {
    "$defs": {
        "Task": {
            "type": "object",
            "properties": {
                "thought": {"type": "string"},
                "subtasks": {"type": "array", "items": {"$ref": "#/$defs/Task"}},
                "conclusion": {"type": "string"},
            },
            "required": ["thought", "conclusion"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "properties": {
        "reasoning": {"type": "array", "items": {"$ref": "#/$defs/Task"}},
        "answer": {"type": "string"},
    },
    "required": ["reasoning", "answer"],
    "additionalProperties": False,
}


async def test_regex_constrained_samples(runtime: EmbeddedRuntime) -> None:
    grammar = Grammar(regex="(yes|no)")
    sampling = SamplingParams(max_new_tokens=10, temperature=1.0, seed=1, n=4, grammar=grammar)
    [result] = await runtime.generate([GenerateRequest(prompt="Is it?", sampling=sampling)])
    for completion in result.completions:
        assert re.fullmatch("yes|no", completion.text)
        assert (completion.finish_reason, completion.matched_stop) == ("stop", 2)
    assert runtime.statistics().blocks_in_use == 0


async def test_a_handle_carries_its_matcher(smollm2: EmbeddedRuntime) -> None:
    grammar = Grammar(json_schema=TASK_SCHEMA)
    prompt = Prompt(messages=(ChatMessage(role="user", content="What is 12 + 7? Reason in JSON."),))
    handle = await smollm2.open_sequence(prompt)
    await handle.generate(SamplingParams(max_new_tokens=0, grammar=grammar))  # attach only
    start = len(handle.token_ids)
    assert handle.grammar is not None and handle.grammar.accepted == []

    async def ids(text: str) -> list[int]:
        return await smollm2.tokenize(text)

    head = await ids(
        '{"reasoning": [{"thought": "add", "subtasks": [{"thought": "units", "conclusion": "9"}], '
    )
    await handle.extend(head)  # forced tokens advance the matcher, recursion included
    assert handle.grammar.accepted == head
    with pytest.raises(
        RequestRejected, match="the forced tokens do not fit the grammar at this point"
    ):
        await handle.extend(await ids('"answer": 3'))  # a Task must conclude first
    assert handle.token_ids[start:] == head and handle.grammar.accepted == head
    # A tool result goes where the schema leaves free text; as data, <|im_end|> is harmless.
    opening, tool = await ids('"conclusion": "'), await ids("tool said <|im_end|> 19")
    await handle.extend(opening + tool)
    await handle.drop_range(
        start + len(head) + len(opening), start + len(head) + len(opening) + len(tool)
    )
    assert handle.grammar.accepted == head + opening == handle.token_ids[start:]
    await handle.extend(await ids('19"}], "answer": "'))
    completion = await handle.generate(
        SamplingParams(max_new_tokens=40, temperature=0, grammar=grammar)
    )
    assert (completion.finish_reason, completion.matched_stop) == ("stop", 2)
    document = json.loads(await smollm2.detokenize(handle.token_ids[start:-1]))
    assert document["reasoning"][0]["subtasks"] == [{"thought": "units", "conclusion": "9"}]
    assert document["reasoning"][0]["conclusion"] == "19"
    assert isinstance(document["answer"], str)
    await handle.release()
    assert smollm2.statistics().blocks_in_use == 0


async def test_grammar_forks_with_the_handle(runtime: EmbeddedRuntime) -> None:
    grammar = Grammar(regex="(ab|cd)+")
    handle = await runtime.open_sequence("Letters:")
    await handle.generate(SamplingParams(max_new_tokens=0, grammar=grammar))
    await handle.extend(await runtime.tokenize("ab"))
    [child] = await handle.fork(1)
    assert child.grammar is not None and child.grammar is not handle.grammar
    assert child.grammar.accepted == handle.grammar.accepted == await runtime.tokenize("ab")
    with pytest.raises(RequestRejected, match="the forced tokens do not fit the grammar"):
        await child.extend(await runtime.tokenize("x"))
    completion = await child.generate(
        SamplingParams(max_new_tokens=8, temperature=0, grammar=grammar)
    )
    assert completion.finish_reason == "length"  # cut mid-pattern: a valid prefix
    assert re.fullmatch("(ab|cd)*(a|c)?", completion.text)
    assert child.grammar.accepted == child.token_ids[-len(child.grammar.accepted) :]
    assert len(child.grammar.accepted) == 1 + len(completion.token_ids)
    for h in (handle, child):
        await h.release()
