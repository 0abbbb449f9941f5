"""GlimpRouter on one arithmetic problem: SmolLM2's first 8 layers probe each step, the whole
model writes the steps the probe finds uncertain (first-token entropy > tau).

Prints one row per step: its H_init, the runtime that wrote it, its tokens and its text; then
the share of steps and tokens on the large model. ``python examples/glimp_router.py [tau]``.
"""

from __future__ import annotations

import sys

import anyio
from orchestrator.plugins.routers.glimp_router import glimp_steps, large_share

from orchestrator import Orchestrator, RunConfig

QUESTION = "Max has 9 bags with 4 marbles in each bag. How many marbles does Max have now?"


async def main(tau: float) -> None:
    runtimes = {"large": "embedded:smollm2", "small": "embedded:smollm2?layers=8"}
    config = RunConfig(
        strategy="beam",  # width 1, one expansion: a single chain of steps
        strategy_options={"width": 1, "expansions_per_beam": 1},
        router="glimp",
        router_options={"tau": tau, "answer_markers": ["####"], "step_delimiter": "\n"},
        graph_options={"temperature": 0.0, "step_delimiter": "\n", "max_solution_tokens": 160},
        runtime="large",
    )
    async with Orchestrator(runtimes) as orch:
        result = await orch.run(QUESTION, config)
    steps = glimp_steps(result.graph, result.meta)
    print(f"{'step':>4} {'H_init':>7} {'route':>6} {'tokens':>6}  text")
    for i, step in enumerate(steps):
        entropy = "-" if step.entropy is None else f"{step.entropy:.3f}"
        text = result.graph[step.node_id].text.strip()[:60]
        print(f"{i:>4} {entropy:>7} {step.route:>6} {step.tokens:>6}  {text}")
    step_share, token_share = large_share(steps, "large")
    print(
        f"answer: {result.answer} · tau {tau} · on the large model: {step_share:.0%} of steps, "
        f"{token_share:.0%} of step tokens · {result.usage.wall_seconds:.1f}s"
    )


if __name__ == "__main__":
    anyio.run(main, float(sys.argv[1]) if len(sys.argv) > 1 else 1.5)
