"""RunConfig validation, --set parsing, runtime specs."""

from __future__ import annotations

import pytest

from orchestrator import ConfigError, RunConfig, parse_runtime_spec


def test_unknown_field_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^run\.grpah: unknown field$"):
        RunConfig.build(grpah="search")


def test_mistyped_field_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^run\.seed: Input should be a valid integer"):
        RunConfig.build(seed="abc")
    with pytest.raises(ConfigError, match=r"^run\.budget\.max_generated_tokens: "):
        RunConfig.build(budget={"max_generated_tokens": -1})


def test_settings_reach_each_section() -> None:
    config = RunConfig().with_settings(
        {
            "graph.max_rounds": "3",
            "strategy.n": "4",
            "scorer.name": "judge",
            "strategy.weights": "[1, 2]",
            "budget.max_nodes": "50",
            "seed": "7",
        }
    )
    assert config.graph_options == {"max_rounds": 3}
    assert config.strategy_options == {"n": 4, "weights": [1, 2]}
    assert config.scorer_options == {"name": "judge"}
    assert config.budget.max_nodes == 50
    assert config.seed == 7


def test_settings_reject_unknown_sections() -> None:
    with pytest.raises(ConfigError, match=r"^nope\.x: unknown section 'nope'"):
        RunConfig().with_settings({"nope.x": "1"})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("embedded:smollm2", ("embedded", "smollm2", {})),
        (
            "embedded:/models/x?device=cuda&dtype=bf16&layers=8",
            ("embedded", "/models/x", {"device": "cuda", "dtype": "bf16", "layers": "8"}),
        ),
        (
            "sglang:http://a:1,http://b:2",
            ("sglang", "http://a:1,http://b:2", {}),
        ),
        ("sglang-router:http://r:30000", ("sglang-router", "http://r:30000", {})),
    ],
)
def test_runtime_specs(spec: str, expected: tuple[str, str, dict[str, str]]) -> None:
    assert parse_runtime_spec(spec) == expected


@pytest.mark.parametrize("spec", ["smollm2", ":x", "a b:c"])
def test_bad_runtime_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match="must look like KIND:TARGET"):
        parse_runtime_spec(spec)
