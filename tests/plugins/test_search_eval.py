"""bench/search_eval.py on the scripted runtime: records, resumption, the summary."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from orchestrator import Orchestrator
from orchestrator.testing import ScriptedRuntime

BENCH = Path(__file__).resolve().parents[2] / "bench" / "search_eval.py"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("search_eval", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = {
    "rules": [
        {"contains": "Max has 9 bags", "outputs": ["9 * 4 = 36\n#### 36"]},
        {
            "contains": "Max has 29 apples",
            "outputs": ["#### 41", "29 - 9 = 20\n\n20 * 2 = 40\n#### 40"],
            "then": "cycle",
        },
    ]
}


async def test_records_resume_and_summary(tmp_path: Path) -> None:
    search_eval = bench()
    args = search_eval.parse_args(
        [
            "--datasets",
            "arithmetic",
            "--methods",
            "best_of_8",
            "--limit",
            "2",
            "--results",
            str(tmp_path),
            "--no-progress",
            "--max-solution-tokens",
            "40",
        ]
    )
    orch = Orchestrator(ScriptedRuntime(SCRIPT))
    await search_eval.evaluate(args, orch)
    greedy = [
        json.loads(x) for x in (tmp_path / "arithmetic.greedy.jsonl").read_text().splitlines()
    ]
    best = [
        json.loads(x) for x in (tmp_path / "arithmetic.best_of_8.jsonl").read_text().splitlines()
    ]
    drop = {"wall_seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in greedy] == [
        {
            "dataset": "arithmetic",
            "method": "greedy",
            "index": 0,
            "reference": "36",
            "answer": "36",
            "correct": True,
            "tokens": 19,
            "scorer_calls": 1,
            "nodes": 2,
            "cap": None,
            "stop_reason": "done",
        },
        {
            "dataset": "arithmetic",
            "method": "greedy",
            "index": 1,
            "reference": "40",
            "answer": "41",
            "correct": False,
            "tokens": 8,
            "scorer_calls": 1,
            "nodes": 2,
            "cap": None,
            "stop_reason": "done",
        },
    ]
    # The cap is 8 × max(greedy's tokens, 48); 8 × 40 reserved tokens fit under it, so no
    # sample is cut short. Best-of-8 picks the checked-right sample.
    assert [(r["answer"], r["correct"], r["cap"], r["tokens"]) for r in best] == [
        ("36", True, 384, 8 * 19),
        ("40", True, 384, 4 * 8 + 4 * 33),
    ]
    await search_eval.evaluate(args, orch)  # resumed: nothing left to run
    assert len((tmp_path / "arithmetic.best_of_8.jsonl").read_text().splitlines()) == 2
    lines = search_eval.summarize(args)
    assert [(x["method"], x["accuracy"], x["tokens_per_problem"]) for x in lines] == [
        ("greedy", 0.5, 13.5),
        ("best_of_8", 1.0, 158.0),
    ]
    assert lines[1]["accuracy_ci90"] == [1.0, 1.0]
    assert lines[1]["gain_vs_greedy"]["mean"] == 0.5
    assert "gain_vs_greedy" not in lines[0]
    search_eval.plot(lines, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
