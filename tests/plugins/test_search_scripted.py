"""Every strategy end to end through the ``search`` graph on the scripted runtime: exact trees,
tokens generated and scorer calls."""

from __future__ import annotations

import math

from orchestrator import Orchestrator, RunConfig
from orchestrator.testing import ScriptedRuntime

from .conftest import DOUBLING, tree


async def run(script: dict, **config: object) -> object:
    orch = Orchestrator(ScriptedRuntime(script))
    return await orch.run(DOUBLING, RunConfig(**config))  # type: ignore[arg-type]


async def test_beam_search() -> None:
    script = {
        "rules": [
            {
                "endswith": "3 + 4 = 7\n\n",
                "outputs": ["So 7 * 2 = 14.\n#### 14", "So 7 * 2 = 15.\n#### 15"],
            },
            {
                "endswith": "7 apples.\n\n",
                "outputs": ["Doubling: 7 * 2 = 15.\n#### 15", "Then double.\n\n"],
            },
            {"endswith": "Then double.\n\n", "outputs": ["7 * 2 = 14.\n#### 14", "#### 14"]},
            {
                "endswith": "assistant\n",
                "outputs": [
                    "3 + 4 = 7\n\n",
                    "3 + 4 = 8\n\n",
                    "Tom buys apples.\n\n",
                    "3 + 4 = 7 apples.\n\n",
                ],
            },
        ]
    }
    result = await run(
        script,
        strategy="beam",
        strategy_options={"width": 2, "expansions_per_beam": 2},
        scorer="step_checker",
    )
    assert tree(result) == {
        "r.0": ("3 + 4 = 7\n\n", 1.0, False, None),
        "r.1": ("3 + 4 = 8\n\n", 0.0, False, None),
        "r.2": ("Tom buys apples.\n\n", 0.5, False, None),
        "r.3": ("3 + 4 = 7 apples.\n\n", 1.0, False, None),
        "r.0.0": ("So 7 * 2 = 14.\n#### 14", 1.0, True, "14"),
        "r.0.1": ("So 7 * 2 = 15.\n#### 15", 0.5, True, "15"),
        "r.3.0": ("Doubling: 7 * 2 = 15.\n#### 15", 0.5, True, "15"),
        "r.3.1": ("Then double.\n\n", 1.0, False, None),
        "r.3.1.0": ("7 * 2 = 14.\n#### 14", 1.0, True, "14"),
        "r.3.1.1": ("#### 14", 1.0, True, "14"),
    }
    assert result.meta["search"]["beams"] == [
        ["r.0", "r.3"],
        ["r.0.0", "r.3.1"],
        ["r.0.0", "r.3.1.0"],
    ]
    assert (result.answer, result.answer_node, result.stop_reason) == ("14", "r.0.0", "done")
    # Steps keep their delimiter; a finished solution also generated its EOS token.
    assert result.usage.generated_tokens == 11 + 11 + 18 + 19 + 23 + 23 + 30 + 14 + 20 + 8
    assert result.usage.scorer_calls == 10


async def test_astar_backtracks_to_the_lowest_f() -> None:
    script = {
        "rules": [
            {
                "endswith": "3 + 4 = 7\n\n",
                "outputs": ["So 7 * 2 = 15.\n#### 15", "Now 7 * 2 = 16.\n\n"],
            },
            {
                "endswith": "Tom buys apples.\n\n",
                "outputs": ["He has 3 + 4 = 7, doubled 7 * 2 = 14.\n#### 14", "#### 12"],
            },
            {"endswith": "assistant\n", "outputs": ["Tom buys apples.\n\n", "3 + 4 = 7\n\n"]},
        ]
    }
    result = await run(script, strategy="astar", strategy_options={"k": 2}, scorer="step_checker")
    assert tree(result) == {
        "r.0": ("Tom buys apples.\n\n", 0.5, False, None),
        "r.1": ("3 + 4 = 7\n\n", 1.0, False, None),
        "r.1.0": ("So 7 * 2 = 15.\n#### 15", 0.5, True, "15"),
        "r.1.1": ("Now 7 * 2 = 16.\n\n", 0.5, False, None),
        "r.0.0": ("He has 3 + 4 = 7, doubled 7 * 2 = 14.\n#### 14", 1.0, True, "14"),
        "r.0.1": ("#### 12", 0.5, True, "12"),
    }
    stats = {n.id: n.attrs.stats for n in result.graph if n.kind == "search"}
    assert stats == {
        "r.0": {"f": 0.5, "g": 0.0, "h": 0.5},
        "r.1": {"f": 0.0, "g": 0.0, "h": 0.0},
        "r.1.0": {"f": 1.0, "g": 0.5, "h": 0.5},
        "r.1.1": {"f": 1.0, "g": 0.5, "h": 0.5},
        "r.0.0": {"f": 0.0, "g": 0.0, "h": 0.0},
        "r.0.1": {"f": 0.5, "g": 0.0, "h": 0.5},
    }
    assert result.meta["search"] == {
        "strategy": "astar",
        "expanded": ["r", "r.1", "r.0"],
        "solutions": ["r.0.0"],
        "frontier": 3,
    }
    assert (result.answer, result.answer_node) == ("14", "r.0.0")
    assert result.usage.scorer_calls == 6


async def test_particle_filter() -> None:
    script = {
        "rules": [
            {
                "endswith": "3 + 4 = 7\n\n",
                "outputs": [
                    "So 7 * 2 = 14.\n#### 14",
                    "So 7 * 2 = 15.\n#### 15",
                    "So 7 * 2 = 15.\n#### 15",
                    "Then 7 + 0 = 8.\n\n",
                ],
            },
            {
                "endswith": "assistant\n",
                "outputs": [
                    "3 + 4 = 7\n\n",
                    "3 + 4 = 8\n\n",
                    "Tom buys apples.\n\n",
                    "3 + 4 = 9\n\n",
                ],
            },
        ]
    }
    result = await run(
        script,
        strategy="particle_filter",
        strategy_options={"num_particles": 4},
        scorer="step_checker",
    )
    assert tree(result) == {
        "r.0": ("3 + 4 = 7\n\n", 1.0, False, None),
        "r.1": ("3 + 4 = 8\n\n", 0.0, False, None),
        "r.2": ("Tom buys apples.\n\n", 0.5, False, None),
        "r.3": ("3 + 4 = 9\n\n", 0.0, False, None),
        "r.0.0": ("So 7 * 2 = 14.\n#### 14", 1.0, True, "14"),
        "r.0.1": ("So 7 * 2 = 15.\n#### 15", 0.5, True, "15"),
        "r.0.2": ("So 7 * 2 = 15.\n#### 15", 0.5, True, "15"),
        "r.0.3": ("Then 7 + 0 = 8.\n\n", 0.5, False, None),
    }
    drawn = [(e["step"], e["drawn"]) for e in result.meta["search"]["resampling"]]
    assert drawn == [(1, ["r.0"] * 4), (2, ["r.0.0"] * 4)]
    assert (result.answer, result.answer_node) == ("14", "r.0.0")


async def test_self_consistency_with_majority_vote() -> None:
    script = {
        "default": {
            "outputs": [
                "#### 14",
                "#### 15",
                "3 + 4 = 7, 7 * 2 = 14\n#### 14",
                "#### 15",
                "no idea",
            ]
        }
    }
    result = await run(
        script, strategy="self_consistency", strategy_options={"n": 5}, scorer="majority_vote"
    )
    assert {i: (s, a) for i, (_, s, _, a) in tree(result).items()} == {
        "r.0": (0.4, "14"),
        "r.1": (0.4, "15"),
        "r.2": (0.4, "14"),
        "r.3": (0.4, "15"),
        "r.4": (0.0, None),
    }
    assert (result.answer, result.answer_node) == ("14", "r.0")  # 2-2 tie: 14 came first
    assert result.meta["search"] == {
        "strategy": "self_consistency",
        "votes": {"14": 2.0, "15": 2.0},
    }


async def test_best_of_n_with_the_step_checker() -> None:
    solutions = [
        "3 + 4 = 7\n\n7 * 2 = 15\n\n#### 15",
        "3 + 4 = 7\n\n7 * 2 = 14\n\n#### 14",
        "#### 14",
    ]
    result = await run(
        {"default": {"outputs": solutions}}, strategy_options={"n": 3}, scorer="step_checker"
    )
    assert [s for _, s, _, _ in tree(result).values()] == [0.5, 1.0, 0.5]
    assert (result.answer, result.answer_node) == ("14", "r.1")


async def test_best_of_n_with_the_llm_judge() -> None:
    script = {
        "rules": [
            {"contains": "#### 14\n\nIs every step", "scores": {"Yes": -0.1, "No": -2.5}},
            {"contains": "#### 15\n\nIs every step", "scores": {"Yes": -2.0, "No": -0.2}},
        ],
        "default": {"outputs": ["#### 15", "#### 14"]},
    }
    result = await run(script, strategy_options={"n": 2}, scorer="llm_judge")
    scores = [s for _, s, _, _ in tree(result).values()]
    assert scores == [1 / (1 + math.exp(1.8)), 1 / (1 + math.exp(-2.4))]
    assert (result.answer, result.answer_node) == ("14", "r.1")
    raw = await run(
        script, strategy_options={"n": 2}, scorer="llm_judge", scorer_options={"normalize": False}
    )
    assert [s for _, s, _, _ in tree(raw).values()] == [math.exp(-2.0), math.exp(-0.1)]
