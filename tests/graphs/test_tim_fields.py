"""TIM's fallback on runtimes without handles: one request per field, prompt edits."""

from __future__ import annotations

import json
from typing import Any

import pytest
import xgrammar
from orchestrator.graphs.tim.fields import FIELDS_FALLBACK

from orchestrator import Capability, Orchestrator, RunResult, ToolSpec, hookimpl
from orchestrator.testing import ALL_CAPABILITIES, ScriptedRuntime

pytestmark = pytest.mark.anyio

NO_HANDLES = Capability.PREFIX_SHARING | Capability.STREAMING | Capability.GRAMMAR
NUMBERS = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


async def mul(params: dict[str, Any]) -> Any:
    return params["a"] * params["b"]


class Tools:
    @hookimpl
    def orchestrator_add_tools(self) -> list[ToolSpec]:
        return [
            ToolSpec(name="mul", parameters=NUMBERS, call=mul),
            ToolSpec(name="add", parameters=NUMBERS, call=mul),
        ]


async def tim(
    outputs: list[str], capabilities: Capability = NO_HANDLES, **fields: Any
) -> tuple[RunResult, ScriptedRuntime]:
    rt = ScriptedRuntime(
        {"rules": [{"contains": "", "outputs": outputs}]}, capabilities=capabilities
    )
    result = await Orchestrator(rt, plugins=[Tools()]).run("6 * 7?", graph="tim", **fields)
    return result, rt


SHAPED = (
    '{"reasoning": [{"thought": "plan", "subtasks": [{"thought": "use mul", "tooluse": '
    '{"tool_name": "mul", "parameters": {"a": 6, "b": 7}, "tool_result": {"result": 42}}, '
    '"conclusion": "42"}, {"thought": "check", "conclusion": "ok"}], "conclusion": "done"}], '
    '"answer": "42"}'
)
SHAPED_OUTPUTS = [
    '"plan"',
    '"use mul"',
    '"mul"',
    '{"a": 6, "b": 7}',
    '"42"',
    '"check"',
    '"ok"',
    '"done"',
    '"42"',
]
SHAPE = [{"subtasks": [{"tool": "mul"}, {}]}]


async def test_a_forced_shape_is_written_one_field_request_at_a_time() -> None:
    result, rt = await tim(SHAPED_OUTPUTS, graph_options={"shape": SHAPE, "whitespace": "any"})
    assert result.fallbacks == [FIELDS_FALLBACK]
    assert result.graph["r.0"].text == SHAPED
    assert result.answer == "42"
    assert result.meta["tim"]["driver"] == "fields"
    assert rt.stats.num_handles_opened == 0
    schemas = [c.sampling.grammar.json_schema for c in rt.calls]  # type: ignore[union-attr]
    text = {"type": "string"}
    assert schemas == [text, text, {"enum": ["mul"]}, NUMBERS, text, text, text, text, text]
    nodes = [rt_node for rt_node in result.graph if rt_node.usage.generated_tokens]
    assert [n.kind for n in nodes] == [
        "thought", "thought", "tooluse", "conclusion", "thought", "conclusion", "conclusion",
        "answer",
    ]  # fmt: skip
    use = result.graph["r.0.0.1.0.1"]
    assert use.attrs.tool_result == {"result": 42}  # type: ignore[union-attr]


async def test_tool_results_and_pruning_are_prompt_edits() -> None:
    result, rt = await tim(
        SHAPED_OUTPUTS, graph_options={"shape": SHAPE}, memory_options={"buffer": 0}
    )
    prompts = [c.prompt_text for c in rt.calls]
    base = prompts[0].removesuffix('{"reasoning": [{"thought": ')
    # the request after the tool call sees its result, inserted by the orchestrator
    assert prompts[4] == base + SHAPED[: SHAPED.index('"42"}, {"thought": "check"')]
    # with B = 0 the finished list is gone from the next prompt (rebuilt without it)
    assert prompts[7] == base + '{"reasoning": [{"thought": "plan", "conclusion": '
    assert [p["node"] for p in result.meta["tim"]["prunes"]] == ["r.0.0.1"]
    assert result.meta["tim"]["prunes"][0]["on_kv"] is False
    assert result.graph["r.0"].text == SHAPED
    assert rt.stats.num_cached_tokens > 0  # the prefix cache serves what did not change


async def test_the_model_chooses_the_structure_with_regex_requests() -> None:
    outputs = [
        '"t"',
        ', "tooluse": ',
        '"add"',
        '{"a": 2, "b": 3}',
        ', "conclusion": ',
        '"c"',
        "]",
        '"6"',
    ]
    result, rt = await tim(outputs, graph_options={"whitespace": "any"})
    assert result.graph["r.0"].text == (
        '{"reasoning": [{"thought": "t", "tooluse": {"tool_name": "add", "parameters": '
        '{"a": 2, "b": 3}, "tool_result": {"result": 6}}, "conclusion": "c"}], "answer": "6"}'
    )
    regexes = [c.sampling.grammar.regex for c in rt.calls if c.sampling.grammar.regex]  # type: ignore[union-attr]
    assert regexes == [
        '(,\\ "tooluse":\\ |,\\ "subtasks":\\ |,\\ "conclusion":\\ )',
        '(,\\ "subtasks":\\ |,\\ "conclusion":\\ )',
        "(,|\\])",
    ]
    names = [
        c.sampling.grammar.json_schema
        for c in rt.calls
        if c.sampling.grammar.json_schema and "enum" in c.sampling.grammar.json_schema
    ]  # type: ignore[union-attr]
    assert names == [{"enum": ["add", "mul"]}]


async def test_without_grammar_the_decode_runs_unconstrained_and_says_so() -> None:
    doc = '{"reasoning": [{"thought": "t", "conclusion": "c"}], "answer": "a"}'
    outputs = ['{"reasoning": [{"thought": "t", "conclusion"', ': "c"}], "answer": "a"}']
    result, rt = await tim(outputs, ALL_CAPABILITIES & ~Capability.GRAMMAR)
    assert result.fallbacks == ["tim: runtime without grammar; the JSON is decoded unconstrained"]
    assert result.graph["r.0"].text == doc
    assert all(c.sampling is None or c.sampling.grammar is None for c in rt.calls)


async def test_compact_whitespace_hands_the_runtime_xgrammar_ebnf() -> None:
    _, rt = await tim(SHAPED_OUTPUTS, graph_options={"shape": SHAPE})
    first = rt.calls[0].sampling
    assert first is not None and first.grammar is not None
    assert first.grammar.json_schema is None
    expected = xgrammar.Grammar.from_json_schema(
        json.dumps({"type": "string"}), any_whitespace=False
    )
    assert first.grammar.ebnf == str(expected)
