"""Search strategies on SmolLM2: accuracy against generated tokens, with bootstrap intervals.

Datasets (``bench/data``): ``arithmetic`` (60 seeded word problems, two or three numbers,
+ − ×) and ``gsm8k`` (the first 30 GSM8K dev problems). Methods, all through the ``search``
graph with one prompt template (the graph's system prompt + the question as the user turn):

- ``greedy``: one solution at temperature 0;
- ``self_consistency@8``: 8 samples, majority vote;
- ``best_of_8``: 8 samples, the step checker picks;
- ``beam@4``: width 4, 2 expansions per beam node, step checker;
- ``astar``: A*-decoding, k samples per expansion, step checker as the PRM;
- ``particle_filter@8``: 8 particles, step checker as the PRM.

Every method but greedy runs under a per-problem cap on generated tokens of
``multiplier × max(greedy's tokens on that problem, --min-greedy-tokens)`` (default 8 ×; the
floor keeps a problem greedy answers in a few tokens from starving the samplers). The
reference answer is never shown to a scorer; correctness is judged afterwards. A run the cap
stops before any candidate finished has no answer, and counts as wrong.

Settings chosen for SmolLM2-135M-Instruct (each a flag): it writes one line per step and
ignores the prompt's request for blank lines, so a step ends at ``"\n"`` (the graph's default
is ``"\n\n"``); a step is at most 48 tokens, so a round of 8 steps fits the smallest cap
(8 × 48) and the core's token reservations do not cut a first round short; a solution is at
most 256 tokens; sampling temperature 0.8 (the particle-filtering paper's).

Resumable: one JSON line per (dataset, method, problem) is appended to
``--results/<dataset>.<method>.jsonl`` as soon as it finishes, and finished problems are
skipped on the next run. Problems run one after another, every method on each, so a partial
run compares all methods on the same problems. At the end it prints one JSON line per
(dataset, method): accuracy with a 90% percentile-bootstrap interval, mean tokens generated,
scorer calls and wall-clock per problem, and the 90% paired-bootstrap interval of the gain
over greedy (A* also against best-of-8); and it writes a PNG of accuracy against tokens.

    python bench/search_eval.py [--limit 20] [--device cuda] [--methods greedy astar ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from orchestrator.plugins.scorers.answers import answers_match, extract_answer
from rich.progress import Progress

from orchestrator import BudgetLimits, Orchestrator, RunConfig

DATA = Path(__file__).parent / "data"
DATASETS = {"arithmetic": DATA / "arithmetic.jsonl", "gsm8k": DATA / "gsm8k_30.jsonl"}
STEP = "step_checker"
METHODS: dict[str, dict[str, Any]] = {
    "greedy": {"strategy": "best_of_n", "strategy_options": {"n": 1}, "scorer": STEP},
    "self_consistency@8": {
        "strategy": "self_consistency",
        "strategy_options": {"n": 8},
        "scorer": "majority_vote",
    },
    "best_of_8": {"strategy": "best_of_n", "strategy_options": {"n": 8}, "scorer": STEP},
    "beam@4": {
        "strategy": "beam",
        "strategy_options": {"width": 4, "expansions_per_beam": 2},
        "scorer": STEP,
    },
    "astar": {"strategy": "astar", "strategy_options": {"k": 3}, "scorer": STEP},
    "particle_filter@8": {
        "strategy": "particle_filter",
        "strategy_options": {"num_particles": 8},
        "scorer": STEP,
    },
}
NUM_RESAMPLES = 10_000


def load(dataset: str, limit: int | None) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in DATASETS[dataset].read_text().splitlines() if line]
    for row in rows:  # GSM8K answers end with "#### N"; ours are the number itself
        row["reference"] = extract_answer(row["answer"]) or row["answer"]
    return rows[:limit]


def read_results(path: Path) -> dict[int, dict[str, Any]]:
    if not path.exists():
        return {}
    return {r["index"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def run_config(method: str, args: argparse.Namespace, cap: int | None, seed: int) -> RunConfig:
    spec = METHODS[method]
    graph = {
        "max_step_tokens": args.max_step_tokens,
        "max_solution_tokens": args.max_solution_tokens,
        "max_rounds": args.max_rounds,
        "step_delimiter": args.step_delimiter.encode().decode("unicode_escape"),
        "temperature": 0.0 if method == "greedy" else args.temperature,
    }
    return RunConfig(
        graph="search",
        graph_options=graph,
        strategy=spec["strategy"],
        strategy_options=spec["strategy_options"],
        scorer=spec["scorer"],
        budget=BudgetLimits(max_generated_tokens=cap),
        seed=seed,
    )


async def evaluate(args: argparse.Namespace, orch: Orchestrator) -> None:
    """Run every (dataset, problem, method) not in the results yet. Problem-major, greedy
    first, so an interrupted run leaves every method on the same problems (paired)."""
    methods = ["greedy", *(m for m in args.methods if m != "greedy")]
    todo = []
    for dataset in args.datasets:
        done = {m: read_results(out(args, dataset, m)) for m in methods}
        problems = load(dataset, args.limit)
        for index, row in enumerate(problems):
            todo.extend((dataset, m, index, row) for m in methods if index not in done[m])
    with Progress(disable=not args.progress) as progress:
        bar = progress.add_task("search eval", total=len(todo))
        for dataset, method, index, row in todo:
            progress.update(bar, description=f"{dataset} #{index} {method}")
            record = await run_one(orch, args, dataset, method, index, row)
            with out(args, dataset, method).open("a") as f:
                f.write(json.dumps(record) + "\n")
            progress.advance(bar)


async def run_one(
    orch: Orchestrator,
    args: argparse.Namespace,
    dataset: str,
    method: str,
    index: int,
    row: dict[str, str],
) -> dict[str, Any]:
    """One problem under one method, capped by greedy's tokens on it; its result line."""
    cap = None
    if method != "greedy":
        greedy = read_results(out(args, dataset, "greedy"))[index]
        cap = args.multiplier * max(greedy["tokens"], args.min_greedy_tokens)
    result = await orch.run(row["question"], run_config(method, args, cap, args.seed + index))
    return {
        "dataset": dataset,
        "method": method,
        "index": index,
        "reference": row["reference"],
        "answer": result.answer,
        "correct": answers_match(result.answer, row["reference"]),
        "tokens": result.usage.generated_tokens,
        "scorer_calls": result.usage.scorer_calls,
        "wall_seconds": round(result.usage.wall_seconds, 3),
        "nodes": result.usage.nodes,
        "cap": cap,
        "stop_reason": result.stop_reason,
    }


async def _evaluate_embedded(args: argparse.Namespace) -> None:
    runtime = args.runtime or f"embedded:smollm2?device={args.device}"
    async with Orchestrator({"smollm2": runtime}) as orch:
        await evaluate(args, orch)


def out(args: argparse.Namespace, dataset: str, method: str) -> Path:
    return Path(args.results) / f"{dataset}.{method}.jsonl"


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    """90% percentile interval of the mean of ``values`` over resampled problems."""
    picks = rng.integers(0, len(values), size=(NUM_RESAMPLES, len(values)))
    means = values[picks].mean(axis=1)
    return [round(float(np.percentile(means, 5)), 4), round(float(np.percentile(means, 95)), 4)]


def summarize(args: argparse.Namespace) -> list[dict[str, Any]]:
    lines = []
    for dataset in args.datasets:
        results = {m: read_results(out(args, dataset, m)) for m in ["greedy", *args.methods]}
        for method in dict.fromkeys(["greedy", *args.methods]):
            rows = results[method]
            if not rows:
                continue
            rng = np.random.default_rng(args.seed)
            correct = np.array([float(r["correct"]) for r in rows.values()])
            line: dict[str, Any] = {
                "dataset": dataset,
                "method": method,
                "num_problems": len(rows),
                "accuracy": round(float(correct.mean()), 4),
                "accuracy_ci90": bootstrap_ci(correct, rng),
                "tokens_per_problem": round(mean(rows, "tokens"), 1),
                "scorer_calls_per_problem": round(mean(rows, "scorer_calls"), 2),
                "wall_seconds_per_problem": round(mean(rows, "wall_seconds"), 2),
                "stopped_by_budget": sum(r["stop_reason"] == "budget" for r in rows.values()),
            }
            for baseline in ("greedy", "best_of_8") if method == "astar" else ("greedy",):
                if method != baseline and results.get(baseline):
                    line[f"gain_vs_{baseline}"] = paired_gain(rows, results[baseline], rng)
            lines.append(line)
    return lines


def mean(rows: dict[int, dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows.values()]))


def paired_gain(
    rows: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]], rng: np.random.Generator
) -> dict[str, Any]:
    """Mean accuracy difference on the problems both ran, with its 90% paired-bootstrap CI."""
    shared = sorted(set(rows) & set(base))
    diff = np.array([float(rows[i]["correct"]) - float(base[i]["correct"]) for i in shared])
    return {"mean": round(float(diff.mean()), 4), "ci90": bootstrap_ci(diff, rng)}


def plot(lines: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(line["dataset"] for line in lines))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for line in (x for x in lines if x["dataset"] == dataset):
            low, high = line["accuracy_ci90"]
            acc = line["accuracy"]
            ax.errorbar(
                line["tokens_per_problem"],
                acc,
                yerr=[[acc - low], [high - acc]],
                fmt="o",
                capsize=4,
            )
            ax.annotate(
                line["method"],
                (line["tokens_per_problem"], acc),
                textcoords="offset points",
                xytext=(5, 5),
            )
        ax.set_xscale("log")
        ax.set_xlabel("generated tokens per problem (log)")
        ax.set_ylabel("accuracy (90% bootstrap CI)")
        num = max(x["num_problems"] for x in lines if x["dataset"] == dataset)
        ax.set_title(f"SmolLM2-135M-Instruct, {dataset} (n={num})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--limit", type=int, default=None, help="first N problems per dataset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", default=None, help="runtime spec (default: embedded SmolLM2)")
    parser.add_argument("--results", default="bench/results/search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--multiplier", type=int, default=8)
    parser.add_argument("--min-greedy-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-step-tokens", type=int, default=48)
    parser.add_argument("--max-solution-tokens", type=int, default=256)
    parser.add_argument("--max-rounds", type=int, default=64)
    parser.add_argument("--step-delimiter", default="\\n", help="escapes allowed: \\n")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    Path(args.results).mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        anyio.run(_evaluate_embedded, args)
    lines = summarize(args)
    for line in lines:
        print(json.dumps(line))
    if lines:
        plot(lines, Path(args.results) / "search_eval.png")


if __name__ == "__main__":
    main()
