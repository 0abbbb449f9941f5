"""Hogwild!: two workers, Alice and Bob, write one solution together over a shared KV cache.

Runs the ``hogwild`` graph on the embedded runtime (SmolLM2 by default), prints each worker's
steps in the order they reached the common history, the answer, and whether the shared cache
was real or the re-prompting fallback was taken. The same from the command line::

    orchestrator run "QUESTION" --graph hogwild --set graph.max_steps=128 \\
        --set graph.step_boundary=text

Options: ``python examples/hogwild.py --workers 3 --max-steps 256 --question "..."``.
A reasoning model (the paper uses QwQ-32B) collaborates far better than SmolLM2-135M, which
mostly shows the mechanics: lockstep decoding, step moves, self-checks and the finisher.
"""

from __future__ import annotations

import argparse

import anyio
from rich.console import Console

from orchestrator import Orchestrator, RunResult

QUESTION = (
    "Sara has 12 pencils. She gives 5 pencils to Tom and then buys 8 more. "
    "How many pencils does Sara have now?"
)


def report(console: Console, result: RunResult) -> None:
    meta = result.meta["hogwild"]
    graph = result.graph
    console.rule(f"hogwild ({meta['mode']}, {meta['inference_steps']} lockstep steps)")
    steps = [graph[node_id] for node_id in meta["history"] if node_id is not None]
    unfinished = [n for n in graph if n.kind == "step" and n.id not in meta["history"]]
    for node in [*steps, *unfinished]:
        done = "" if node.id in meta["history"] else " (unfinished)"
        console.print(
            f"[bold]{meta['workers'][node.attrs.worker]}[/bold]{done}: {node.text.strip()}"
        )
    for line in result.fallbacks:
        console.print(f"[yellow]fallback:[/yellow] {line}")
    usage = result.usage
    console.print(
        f"[bold]answer: {result.answer}[/bold] · stop: {meta['stop']} · "
        f"{meta['self_checks']} self-checks · {usage.generated_tokens} generated tokens · "
        f"{usage.wall_seconds:.1f}s"
    )


async def main(args: argparse.Namespace) -> None:
    console = Console()
    console.print(f"[bold]question:[/bold] {args.question}")
    async with Orchestrator() as orch:  # default runtime: embedded:smollm2
        result = await orch.run(
            args.question,
            graph="hogwild",
            seed=args.seed,
            graph_options={
                "num_workers": args.workers,
                "max_steps": args.max_steps,
                # SmolLM2 writes ".\n\n" as ".", "\n", "\n": the reference's rule (a token
                # containing "\n\n") would never end a step.
                "step_boundary": "text",
            },
        )
    report(console, result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    anyio.run(main, parser.parse_args())
