"""TIM: one JSON-constrained decode of recursive tasks, a tool called mid-sequence, pruning.

Runs the ``tim`` graph on the embedded runtime (SmolLM2 by default) with a calculator tool.
The response ``{"reasoning": [task, ...], "answer": ...}`` is decoded under its JSON schema
(xgrammar); nodes appear as it streams; when the tool's ``parameters`` close, the tool runs
and its result is encoded into the same sequence; completed subtask lists beyond the buffer
``B`` are dropped from the KV cache by the ``tim_pruning`` memory. ``--shape three-level``
forces a three-level task tree (as the official SDK's task types can). Prints the tree (pruned
nodes marked), the document, and what the working memory held. The same from the CLI::

    orchestrator run "QUESTION" --graph tim --set memory.buffer=1

SmolLM2-135M is not TIM-8b: expect well-formed structure (the grammar sees to it) around
weak reasoning.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio
from rich.console import Console

from orchestrator import Orchestrator, ToolSpec, hookimpl, render_tree

QUESTION = "A box holds 6 rows of 7 eggs. How many eggs are in 3 boxes?"
NUMBER = {"type": "integer", "minimum": 0, "maximum": 999}
SHAPES: dict[str, Any] = {
    "free": None,
    "three-level": [
        {"subtasks": [{"subtasks": [{"tool": "multiply"}]}, {"tool": "multiply"}]},
        {"subtasks": [{}]},
    ],
}


class Calculator:
    """A tool plugin, registered like a third party's: ``multiply`` two integers."""

    @hookimpl
    def orchestrator_add_tools(self) -> list[ToolSpec]:
        async def multiply(params: dict[str, Any]) -> Any:
            return {"product": params["a"] * params["b"]}

        return [
            ToolSpec(
                name="multiply",
                description="multiply two integers",
                parameters={
                    "type": "object",
                    "properties": {"a": NUMBER, "b": NUMBER},
                    "required": ["a", "b"],
                    "additionalProperties": False,
                },
                call=multiply,
            )
        ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="three-level")
    parser.add_argument("--buffer", type=int, default=1, help="B; -1 turns pruning off")
    parser.add_argument("--field-chars", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()
    console = Console()
    console.print(f"[bold]question:[/bold] {args.question}")
    async with Orchestrator(plugins=[Calculator()]) as orch:
        result = await orch.run(
            args.question,
            graph="tim",
            graph_options={
                "shape": SHAPES[args.shape],
                "max_field_chars": args.field_chars,
                "temperature": args.temperature,
                "max_tokens": 1024,
            },
            memory_options={"buffer": None if args.buffer < 0 else args.buffer},
        )
    meta = result.meta["tim"]
    console.rule("run graph (pruned subtrees are kept in the record)")
    console.print(render_tree(result.graph, max_text=60))
    console.rule("response")
    console.print(
        json.dumps(json.loads(result.graph["r.0"].text), indent=1)
        if meta["complete"]
        else result.graph["r.0"].text,
        markup=False,
    )
    console.rule("working memory")
    for prune in meta["prunes"]:
        console.print(
            f"pruned {prune['node']}: {prune['dropped_tokens']} tokens dropped from the KV, "
            f"{prune['reencoded_tokens']} re-encoded after it"
        )
    console.print(
        f"peak {meta['peak_kv_tokens']} tokens held (prompt {meta['prompt_tokens']}), "
        f"{meta['final_kv_tokens']} at the end; {meta['tool_calls']} tool call(s), "
        f"{meta['injected_tokens']} tokens injected into the sequence"
    )
    console.print(
        f"[bold]answer: {result.answer}[/bold] · stop: {result.stop_reason} · "
        f"{result.usage.wall_seconds:.1f}s · fallbacks: {result.fallbacks or 'none'}"
    )


if __name__ == "__main__":
    anyio.run(main)
