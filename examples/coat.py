"""CoAT: MCTS over reasoning steps, each new step with an associative memory.

Runs the ``coat`` graph on the embedded runtime (SmolLM2 by default): MCTS (UCT) expands
K candidate steps per iteration; for each, the model writes an associative memory, grounded
here in a few user documents through the ``lexical`` (BM25) retriever; each step is valued
``V = judge(step) + β · judge(memory)``; memories along a path go into its children's context.
Prints the tree with visits, values and memories, then the answer. From the command line::

    orchestrator run "QUESTION" --graph coat --set strategy.num_children=2 \\
        --set memory.retriever=lexical --set 'memory.retriever_options={"paths": ["docs/"]}'
"""

from __future__ import annotations

import argparse

import anyio
from rich.console import Console

from orchestrator import Orchestrator, RunResult

QUESTION = "A train leaves at 9:40 and the trip takes 85 minutes. At what time does it arrive?"
DOCUMENTS = [
    "An hour has 60 minutes, so 85 minutes are 1 hour and 25 minutes.",
    "To add a duration to a clock time, add the hours and the minutes separately, then carry "
    "every 60 minutes into one more hour.",
    "Trains in the timetable run every twenty minutes on weekdays.",
]


def report(console: Console, result: RunResult) -> None:
    console.rule("coat")
    graph = result.graph
    for node in graph:
        if node.kind != "search":
            continue
        memories = [c.attrs.memory for c in graph.children(node.id) if c.kind == "association"]
        indent = "  " * (node.depth - 1)
        attrs = node.attrs
        console.print(
            f"{indent}{node.id} N={attrs.visits} Q={attrs.value:.2f} V={node.score or 0:.2f}: "
            f"{node.text.strip()[:90]!r}"
        )
        if memories and memories[0]:
            console.print(f"{indent}  [dim]memory: {memories[0][:90]}[/dim]")
    usage = result.usage
    console.print(
        f"[bold]answer: {result.answer}[/bold] ({result.answer_node}) · "
        f"{result.meta['search']['iterations']} iterations · {usage.generated_tokens} tokens · "
        f"{usage.scorer_calls} scorer calls · {usage.wall_seconds:.1f}s"
    )


async def main(args: argparse.Namespace) -> None:
    console = Console()
    console.print(f"[bold]question:[/bold] {args.question}")
    async with Orchestrator() as orch:  # default runtime: embedded:smollm2
        result = await orch.run(
            args.question,
            graph="coat",
            seed=args.seed,
            strategy_options={"num_children": args.k, "max_iterations": args.iterations},
            memory_options={
                "retriever": "lexical",
                "retriever_options": {"documents": DOCUMENTS},
            },
            scorer_options={"beta": args.beta},
            graph_options={"max_step_tokens": 64},
        )
    report(console, result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    anyio.run(main, parser.parse_args())
