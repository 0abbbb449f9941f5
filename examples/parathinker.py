"""ParaThinker on SmolLM2: four isolated attempts from one prompt, then a summary that reads
all four through one view over their KV (nothing re-prefilled), against the text join.

SmolLM2 was not trained with ParaThinker's ``<think i>`` / ``<summary>`` tokens, so the
control text here is plain language. ``python examples/parathinker.py``.
"""

from __future__ import annotations

import anyio

from orchestrator import Orchestrator, RunConfig

QUESTION = "Max has 9 bags with 4 marbles in each bag. How many marbles does Max have now?"
OPTIONS = {
    "num_paths": 4,
    "path_prefix": "\nAttempt {i}:",
    "path_suffix": "\n(end of attempt {i})",
    "summary_prefix": "\nComparing the attempts, the final answer is",
    "max_path_tokens": 96,
    "max_summary_tokens": 24,
}


async def main() -> None:
    async with Orchestrator() as orch:  # embedded:smollm2
        for join in ("kv", "text"):
            config = RunConfig(graph="parathinker", graph_options={**OPTIONS, "join": join})
            result = await orch.run(QUESTION, config)
            meta = result.meta["parathinker"]
            print(f"== {join} join · answer {result.answer}")
            if join == "kv":
                for node in result.graph:
                    if node.kind == "path":
                        index = getattr(node.attrs, "index", "?")
                        print(f"  path {index}: {node.text.strip()[:70]!r}")
            print(
                f"  paths start at {meta['position_offset']}, tokens {meta['path_tokens']}; "
                f"summary at {meta['summary_offset']}, prefilled {meta['summary_prefill_tokens']} "
                f"tokens, of which {meta['reprefilled_tokens']} path tokens again"
            )
            print(f"  fallbacks: {result.fallbacks or 'none'}")


if __name__ == "__main__":
    anyio.run(main)
