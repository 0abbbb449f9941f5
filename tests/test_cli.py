"""The CLI: listings, runs on a scripted runtime (through a plugin), one-line errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from orchestrator._cli import main


@pytest.fixture
def scripted_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A plugin module registering the runtime kind `scripted` (spec target = a script file)."""
    (tmp_path / "cli_scripted_plugin.py").write_text(
        textwrap.dedent(
            """
            from orchestrator import RuntimeSpec, hookimpl
            from orchestrator.testing import Script, ScriptedRuntime

            def build(target, options):
                model = options.get("model", "scripted")
                return ScriptedRuntime(Script.from_file(target), model=model)

            @hookimpl
            def orchestrator_add_runtimes():
                return [RuntimeSpec(kind="scripted", factory=build)]
            """
        )
    )
    (tmp_path / "script.json").write_text(
        json.dumps({"default": {"outputs": ["3 + 4 = 7\n\n#### 7", "#### 9"]}})
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return "cli_scripted_plugin"


def test_plugins_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "list", "--json"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert infos["search-graph"]["source"] == "builtin"
    assert infos["search-graph"]["registers"] == {"graph": ["search"]}
    assert infos["best-of-n"]["registers"] == {"strategy": ["best_of_n"]}


def test_graphs_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graphs", "list"]) == 0
    assert "search" in capsys.readouterr().out.split()


def test_run_json_with_settings_and_trace(
    scripted_plugin: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "spans.jsonl"
    status = main(
        [
            "--plugin", scripted_plugin,
            "run", "What is 3 + 4?",
            "--runtime", "main=scripted:script.json",
            "--set", "strategy.n=2",
            "--reference", "7",
            "--seed", "3",
            "--trace", str(trace),
            "--json",
        ]
    )  # fmt: skip
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] == "7"
    assert result["stop_reason"] == "done"
    assert [n["id"] for n in result["graph"]["nodes"]] == ["r", "r.0", "r.1"]
    spans = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sorted({s["name"] for s in spans}) == [
        "invoke_workflow search",
        "orchestrator.node search",
        "orchestrator.score answer_match",
        "text_completion scripted",
    ]


def test_budget_tokens_option(scripted_plugin: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--plugin", scripted_plugin, "run", "q", "--runtime", "m=scripted:script.json"]
    assert main([*args, "--budget-tokens", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stop_reason"] == "budget"
    assert result["usage"]["generated_tokens"] <= 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "q", "--graph", "nope"], "error: unknown graph 'nope' (registered: "),
        (["run", "q", "--set", "strategy"], "error: --set: expected KEY=VALUE, got 'strategy'"),
        (
            ["run", "q", "--runtime", "x=nokind"],
            "error: runtime: runtime spec 'nokind' must look like KIND:TARGET",
        ),
        (["run", "q", "--runtime", "x=warp:drive"], "error: unknown runtime 'warp' (registered: "),
        (
            ["run", "q", "--set", "strategy.n=0", "--runtime", "m=scripted:script.json"],
            "error: strategy.n: Input should be greater than or equal to 1",
        ),
        (
            ["--plugin", "no_such_plugin_mod", "plugins", "list"],
            'error: plugin "no_such_plugin_mod": Error importing plugin',
        ),
    ],
)
def test_errors_are_one_line(
    scripted_plugin: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--plugin", scripted_plugin, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(scripted_plugin: str) -> None:
    with pytest.raises(Exception, match="unknown graph 'nope'"):
        main(
            [
                "--debug",
                "--plugin",
                scripted_plugin,
                "run",
                "q",
                "--graph",
                "nope",
                "--runtime",
                "m=scripted:script.json",
            ]
        )
