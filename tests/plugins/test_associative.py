"""The associative memory: what it asks, what it keeps, and the context it builds."""

from __future__ import annotations

from orchestrator.plugins.memory.associative import (
    AssociativeMemory,
    AssociativeMemoryConfig,
    memory_of,
)

from orchestrator import Node, Orchestrator, RunContext
from orchestrator.testing import ScriptedRuntime

from .conftest import context, grow


def runtime() -> ScriptedRuntime:
    return ScriptedRuntime(
        {
            "rules": [
                {"contains": "New step:\nFirst.", "outputs": ["Fact one."]},
                {"contains": "New step:\nSecond.", "outputs": ["  none, really  "]},
                {"contains": "New step:\nThird.", "outputs": ["Fact three."]},
            ]
        }
    )


def node_with_text(ctx: RunContext, parent: Node | str, text: str) -> Node:
    """A generated step: its text and its (scripted: one per character) token ids."""
    node = grow(ctx, parent, 0.5, text=text)
    node.token_ids = [ord(c) + 256 for c in text]
    return node


async def test_memories_accumulate_along_the_path_into_the_context() -> None:
    rt = runtime()
    ctx = context(Orchestrator(rt))
    memory = AssociativeMemory(AssociativeMemoryConfig(system_prompt=None))
    first = node_with_text(ctx, "r", "First.")
    await memory.observe(first, ctx)
    second = node_with_text(ctx, first, "Second.")
    await memory.observe(second, ctx)
    third = node_with_text(ctx, second, "Third.")
    await memory.observe(third, ctx)
    assert [memory_of(n.id, ctx) for n in (first, second, third)] == [
        "Fact one.",
        None,  # "None" (case-insensitive) adds nothing
        "Fact three.",
    ]
    assert [(n.id, n.kind, n.text) for n in ctx.graph if n.kind == "association"] == [
        ("r.0.0", "association", "Fact one."),
        ("r.0.1.0", "association", "  none, really  "),
        ("r.0.1.1.0", "association", "Fact three."),
    ]
    # The third step's association sees the path, the step and what was recalled so far.
    asked = rt.calls[-1].prompt_text
    assert asked == (
        "<|im_start|>user\nQuestion:\nq\n\nReasoning so far:\nFirst.Second.\n\n"
        "New step:\nThird.\n\nAlready recalled:\nFact one.\n\n"
        "Which facts or pieces of knowledge does the new step bring to mind that help answer "
        "the question? Write them in one or two short sentences, without repeating what was "
        "already recalled. If nothing new and useful comes to mind, write None.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # A child of the third step reads every step, each followed by its memory, if any.
    child = grow(ctx, third, 0.0)
    prompt = await memory.context(child, ctx)
    assert await rt.detokenize(prompt.token_ids or ()) == (
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
        "First.(Associated memory: Fact one.)\n\nSecond.Third.(Associated memory: Fact three.)\n\n"
    )


async def test_the_search_graph_runs_with_the_associative_memory() -> None:
    rt = ScriptedRuntime(
        {
            "rules": [
                {"contains": "Which facts", "outputs": ["Seven is prime."]},
                {"endswith": "(Associated memory: Seven is prime.)\n\n", "outputs": ["#### 7"]},
                {"endswith": "assistant\n", "outputs": ["Think.\n\n"]},
            ]
        }
    )
    orch = Orchestrator(rt)
    result = await orch.run(
        "q",
        strategy="beam",
        strategy_options={"width": 1, "expansions_per_beam": 1},
        memory="associative",
    )
    assert result.answer == "7"
    assert [(n.id, n.kind, n.text) for n in result.graph if n.kind != "question"] == [
        ("r.0", "search", "Think.\n\n"),
        ("r.0.0", "association", "Seven is prime."),
        ("r.0.1", "search", "#### 7"),
        ("r.0.1.0", "association", "Seven is prime."),
    ]
