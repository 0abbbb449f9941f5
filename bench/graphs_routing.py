"""Routing and joins on the embedded runtime: GlimpRouter against the large model alone, and
ParaThinker's DAG join against a text join. One JSON line per case.

``glimp`` (issue 7): every problem of ``--data`` (default ``bench/data/arithmetic.jsonl``,
the first ``--limit``) is solved greedily, step by step (the ``search`` graph, beam of width 1,
one expansion per step, a line per step: SmolLM2 seldom leaves blank lines), (a) by the large
runtime alone and (b) with GlimpRouter for each ``--tau``: small = the first
``--small-layers`` layers of the model (the embedded runtime's draft variant, sharing the
tokenizer), large = the whole model. Each condition has its own runtime instances, so no
condition reads another's prefix cache; conditions alternate per problem, so machine load
hits them alike. Per condition: accuracy against the reference, steps and step tokens, the
share of steps and of step tokens the large runtime wrote, generated tokens per runtime and
the wall seconds summed over problems (the ratio to the large runtime alone is
``wall_vs_large``). The probes' tokens count as generated tokens of the small runtime.

``parathinker``: for each ``--paths`` P, the ``parathinker`` graph on the first ``--pt-limit``
problems with the KV join (a view over shared segments) and with the text join: the
summary's prefill tokens, the path tokens the summary prefilled again, and the wall seconds.

Run: ``python bench/graphs_routing.py [--cases glimp parathinker] [--limit 20]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import torch
from orchestrator.plugins.routers.glimp_router import glimp_steps
from orchestrator.plugins.scorers.answers import answers_match
from orchestrator.runtimes.embedded import EmbeddedRuntime

from orchestrator import Orchestrator, RunConfig, RunResult

DATA = Path(__file__).parent / "data" / "arithmetic.jsonl"
STEP = "\n"


def load(path: Path, limit: int) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[:limit] if line.strip()]


def _search_config(router: dict[str, Any] | None, max_tokens: int) -> RunConfig:
    fields: dict[str, Any] = {
        "strategy": "beam",
        "strategy_options": {"width": 1, "expansions_per_beam": 1},
        "graph_options": {
            "temperature": 0.0,
            "step_delimiter": STEP,
            "max_step_tokens": 64,
            "max_solution_tokens": max_tokens,
        },
        "runtime": "large",
    }
    if router is not None:
        fields.update(router="glimp", router_options=router)
    return RunConfig(**fields)


def _steps(result: RunResult) -> list[tuple[str, int]]:
    """(runtime, tokens) of each step of the answer's path."""
    return [(n.runtime or "", len(n.token_ids)) for n in result.graph if n.kind == "search"]


class _Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.correct = self.steps = self.step_tokens = 0
        self.large_steps = self.large_tokens = 0
        self.generated: dict[str, int] = {}
        self.seconds = 0.0

    def add(self, result: RunResult, reference: str, seconds: float) -> None:
        self.correct += answers_match(result.answer, reference)
        self.seconds += seconds
        steps = _steps(result)
        self.steps += len(steps)
        self.step_tokens += sum(t for _, t in steps)
        self.large_steps += sum(1 for r, _ in steps if r == "large")
        self.large_tokens += sum(t for r, t in steps if r == "large")
        for node in result.graph:
            if node.runtime is not None:
                self.generated[node.runtime] = (
                    self.generated.get(node.runtime, 0) + node.usage.generated_tokens
                )

    def line(self, num_problems: int, baseline_seconds: float) -> dict[str, Any]:
        return {
            "condition": self.name,
            "accuracy": round(self.correct / num_problems, 3),
            "steps": self.steps,
            "step_tokens": self.step_tokens,
            "large_step_share": round(self.large_steps / max(self.steps, 1), 3),
            "large_token_share": round(self.large_tokens / max(self.step_tokens, 1), 3),
            "generated_tokens": self.generated,
            "wall_seconds": round(self.seconds, 2),
            "wall_vs_large": round(self.seconds / baseline_seconds, 3),
        }


async def glimp_case(args: argparse.Namespace) -> dict[str, Any]:
    problems = load(args.data, args.limit)
    engine = {"kv_cache_bytes": 256 * 2**20, "device": args.device}
    alone = EmbeddedRuntime.from_pretrained(args.model, **engine)
    pairs = {
        tau: {
            "large": EmbeddedRuntime.from_pretrained(args.model, **engine),
            "small": EmbeddedRuntime.from_pretrained(
                args.model, layers=args.small_layers, **engine
            ),
        }
        for tau in args.tau
    }
    tallies = {"large_alone": _Tally("large_alone")}
    tallies.update({f"glimp_tau={tau:g}": _Tally(f"glimp_tau={tau:g}") for tau in args.tau})
    entropies: list[float] = []
    try:
        for problem in problems:
            start = time.perf_counter()
            result = await Orchestrator({"large": alone}).run(
                problem["question"], _search_config(None, args.max_tokens)
            )
            tallies["large_alone"].add(result, problem["answer"], time.perf_counter() - start)
            for tau, pair in pairs.items():
                router = {"tau": tau, "answer_markers": ["####"], "step_delimiter": STEP}
                start = time.perf_counter()
                result = await Orchestrator(pair).run(  # type: ignore[arg-type]
                    problem["question"], _search_config(router, args.max_tokens)
                )
                seconds = time.perf_counter() - start
                tallies[f"glimp_tau={tau:g}"].add(result, problem["answer"], seconds)
                if tau == args.tau[0]:
                    steps = glimp_steps(result.graph, result.meta)
                    entropies += [s.entropy for s in steps if s.entropy is not None]
    finally:
        for rt in [alone, *(r for pair in pairs.values() for r in pair.values())]:
            await rt.aclose()
    baseline = tallies["large_alone"].seconds
    entropies.sort()
    quartiles = [round(entropies[int(q * (len(entropies) - 1))], 3) for q in (0.25, 0.5, 0.75)]
    return {
        "bench": "glimp_router",
        "problems": len(problems),
        "small_layers": args.small_layers,
        "step_delimiter": STEP,
        "h_init_quartiles": quartiles if entropies else None,
        "conditions": [t.line(len(problems), baseline) for t in tallies.values()],
        "device": args.device,
        "threads": torch.get_num_threads(),
    }


async def parathinker_case(args: argparse.Namespace, num_paths: int) -> dict[str, Any]:
    problems = load(args.data, args.pt_limit)
    rt = EmbeddedRuntime.from_pretrained(args.model, kv_cache_bytes=256 * 2**20, device=args.device)
    out: dict[str, Any] = {"bench": "parathinker_join", "paths": num_paths}
    try:
        for join in ("kv", "text"):
            prefill = reprefilled = path_tokens = 0
            seconds = 0.0
            for problem in problems:
                options = {
                    "num_paths": num_paths,
                    "join": join,
                    "path_prefix": "\nAttempt {i}:",
                    "path_suffix": "\n(end of attempt {i})",
                    "summary_prefix": "\nComparing the attempts, the final answer is",
                    "max_path_tokens": 96,
                    "max_summary_tokens": 16,
                }
                start = time.perf_counter()
                result = await Orchestrator(rt).run(
                    problem["question"], RunConfig(graph="parathinker", graph_options=options)
                )
                seconds += time.perf_counter() - start
                meta = result.meta["parathinker"]
                prefill += meta["summary_prefill_tokens"]
                reprefilled += meta["reprefilled_tokens"]
                path_tokens += sum(meta["path_tokens"])
            out[join] = {
                "summary_prefill_tokens": prefill,
                "reprefilled_path_tokens": reprefilled,
                "path_tokens": path_tokens,
                "wall_seconds": round(seconds, 2),
            }
    finally:
        await rt.aclose()
    out.update(problems=len(problems), device=args.device, threads=torch.get_num_threads())
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["glimp", "parathinker"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--tau", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--small-layers", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--paths", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--pt-limit", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="HF directory or .gguf (default SmolLM2)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    lines = []
    if "glimp" in args.cases:
        lines.append(anyio.run(glimp_case, args))
        print(json.dumps(lines[-1]), flush=True)
    if "parathinker" in args.cases:
        for num_paths in args.paths:
            lines.append(anyio.run(parathinker_case, args, num_paths))
            print(json.dumps(lines[-1]), flush=True)
    return lines


if __name__ == "__main__":
    main()
