"""A fast/slow cascade on SmolLM2: a one-sample answer forced to be short (Dualformer-style
mode prefix), escalated to self-consistency over four step-by-step samples when the fast
answer's mean token logprob is below the threshold (the ``confidence`` gate).

Prints, per question, whether it escalated, the gate's reason and each tier's cost.
``python examples/cascade.py [threshold]``.
"""

from __future__ import annotations

import sys

import anyio

from orchestrator import Orchestrator, RunConfig

QUESTIONS = [
    "Ben has 7 shells. He buys 9 more shells. How many shells does Ben have now?",
    "Max has 29 apples. He gives 9 apples to a friend. Then he ends up with twice as many "
    "apples as that. How many apples does Max have now?",
]


def config(threshold: float) -> RunConfig:
    return RunConfig(
        graph="cascade",
        graph_options={
            "fast": {
                "strategy": "best_of_n",
                "strategy_options": {"n": 1},
                "graph_options": {"record_logprobs": True, "max_solution_tokens": 32},
                "mode_prefix": "The answer is",
            },
            "slow": {
                "strategy": "self_consistency",
                "strategy_options": {"n": 4},
                "graph_options": {"max_solution_tokens": 160},
                "mode_prefix": "Let's think step by step.",
            },
        },
        gate="confidence",
        gate_options={"threshold": threshold},
    )


async def main(threshold: float) -> None:
    async with Orchestrator() as orch:  # embedded:smollm2
        for question in QUESTIONS:
            result = await orch.run(question, config(threshold))
            record = result.meta["cascade"]
            print(
                f"Q: {question}\n  answer {result.answer} · escalated: {record['escalated']} "
                f"({record['reason']})"
            )
            for tier in ("fast", "slow"):
                if tier in record:
                    t = record[tier]
                    print(
                        f"  {tier}: answer {t['answer']}, {t['generated_tokens']} tokens, "
                        f"cost {t['cost']:.2f}, {t['seconds']:.1f}s"
                    )


if __name__ == "__main__":
    anyio.run(main, float(sys.argv[1]) if len(sys.argv) > 1 else -0.5)
