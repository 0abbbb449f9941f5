"""ThreadWeaver: outlines fork parallel threads that are joined back as text.

Runs the ``threadweaver`` graph on the embedded runtime (SmolLM2 by default) in ``prompted``
mode — SmolLM2 was never trained on ThreadWeaver's tags, so the orchestrator writes the
``<Parallel>``/``<Outlines>`` scaffold and asks for one outline per line; each outline then
becomes a thread forked from the shared prefix (sequence handles), and the threads are joined
in outline order before the model writes its conclusion. Prints the tree, the response, and
the token latency (sequential tokens + the longest thread) against the total tokens. The same
from the command line::

    orchestrator run "QUESTION" --graph threadweaver --set graph.mode=prompted

A ThreadWeaver-trained model (the tags as special tokens) runs with ``--mode tags``.
"""

from __future__ import annotations

import argparse

import anyio
from rich.console import Console

from orchestrator import Orchestrator, render_tree

QUESTION = "Sara has 12 pencils and Tom has 9 pencils. How many pencils do they have together?"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--mode", choices=["prompted", "tags"], default="prompted")
    parser.add_argument("--outlines", type=int, default=2)
    parser.add_argument("--thread-tokens", type=int, default=48)
    parser.add_argument("--response-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()
    console = Console()
    console.print(f"[bold]question:[/bold] {args.question}")
    async with Orchestrator() as orch:  # default runtime: embedded:smollm2
        result = await orch.run(
            args.question,
            graph="threadweaver",
            graph_options={
                "mode": args.mode,
                "num_outlines": args.outlines,
                "max_thread_tokens": args.thread_tokens,
                "max_response_tokens": args.response_tokens,
                "temperature": args.temperature,
            },
        )
    meta = result.meta["threadweaver"]
    console.rule("run graph")
    console.print(render_tree(result.graph, max_text=70))
    console.rule("response")
    console.print(meta["response"], markup=False)
    console.rule("token latency")
    console.print(
        f"critical path {meta['critical_path_tokens']} tokens (sequential "
        f"{meta['sequential_tokens']} + longest thread per block {meta['blocks']}) vs "
        f"{meta['total_tokens']} generated in all: {meta['token_latency_speedup']:.2f}x"
    )
    console.print(
        f"[bold]answer: {result.answer}[/bold] · stop: {result.stop_reason} · "
        f"{result.usage.wall_seconds:.1f}s · fallbacks: {result.fallbacks or 'none'}"
    )


if __name__ == "__main__":
    anyio.run(main)
