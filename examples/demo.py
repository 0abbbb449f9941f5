"""The first end-to-end slice: one arithmetic word problem on the embedded model, twice.

1. Greedy: the ``search`` graph with one sample at temperature 0.
2. Best-of-8: eight sampled solutions scored by the answer-match scorer against the reference
   answer (an oracle verifier: it shows what search with a verifier does for a 135M model
   that gets the sum wrong greedily, not what it does without one).

Prints both answers, the scorer's verdicts, the tree and the usage. Run with ``make demo``.
"""

from __future__ import annotations

import anyio
from rich.console import Console

from orchestrator import Orchestrator, RunResult, render_tree

QUESTION = "Tom has 7 apples. He buys 5 more apples. How many apples does Tom have now?"
REFERENCE = "12"


def report(console: Console, title: str, result: RunResult) -> None:
    console.rule(title)
    console.print(render_tree(result.graph, max_text=100))
    verdicts = [
        (n.id, getattr(n.attrs, "answer", None), n.score)
        for n in result.graph
        if n.kind == "search"
    ]
    for node_id, answer, score in verdicts:
        verdict = "correct" if score == 1.0 else "wrong"
        console.print(f"  {node_id}: answer={answer!s:>6}  scorer: {verdict} ({score})")
    usage = result.usage
    console.print(
        f"[bold]answer: {result.answer}[/bold] (reference {REFERENCE}) · "
        f"stop: {result.stop_reason} · "
        f"{usage.generated_tokens} generated tokens, {usage.prompt_tokens} prompt tokens "
        f"({usage.cached_tokens} cached), {usage.runtime_calls} runtime calls, "
        f"{usage.scorer_calls} scorer calls, {usage.wall_seconds:.1f}s"
    )


async def main() -> None:
    console = Console()
    console.print(f"[bold]question:[/bold] {QUESTION}")
    async with Orchestrator() as orch:  # default runtime: embedded:smollm2
        greedy = await orch.run(
            QUESTION,
            reference=REFERENCE,
            strategy_options={"n": 1},
            graph_options={"temperature": 0.0, "max_solution_tokens": 160},
        )
        report(console, "greedy", greedy)
        best = await orch.run(
            QUESTION,
            reference=REFERENCE,
            seed=0,
            strategy_options={"n": 8},
            graph_options={"temperature": 0.8, "max_solution_tokens": 160},
        )
        report(console, "best-of-8 with the answer-match scorer", best)


if __name__ == "__main__":
    anyio.run(main)
