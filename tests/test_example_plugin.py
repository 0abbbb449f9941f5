"""The example third-party package installs, is listed, and changes a run's result."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import Orchestrator
from orchestrator.testing import ScriptedRuntime

PACKAGE = Path(__file__).resolve().parents[1] / "examples" / "plugin_package"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(PACKAGE)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return target


@pytest.fixture
def on_path(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(installed))
    monkeypatch.delenv("ORCHESTRATOR_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("ORCHESTRATOR_PLUGINS", raising=False)
    importlib.invalidate_caches()


def runtime() -> ScriptedRuntime:
    return ScriptedRuntime(
        {
            "default": {
                "outputs": [
                    "First add three and four, which gives seven apples in total.\n\n#### 7",
                    "3 + 4 = 7\n\n#### 7",
                ]
            }
        }
    )


async def test_listed_as_an_entry_point(on_path: None) -> None:
    orch = Orchestrator(runtime())
    infos = {i.name: i for i in orch.plugin_manager.plugin_infos()}
    assert infos["brevity"].source == "entrypoint:orchestrator-brevity"
    assert infos["brevity"].version == "0.1.0"
    assert infos["brevity"].registers == {"scorer": ["brevity"]}


async def test_changes_the_chosen_candidate(on_path: None) -> None:
    baseline = await Orchestrator(runtime()).run("q", strategy_options={"n": 2})
    assert baseline.answer_node == "r.0"  # answer_match ties; the earliest wins
    brief = await Orchestrator(runtime()).run("q", scorer="brevity", strategy_options={"n": 2})
    assert brief.answer_node == "r.1"  # the shorter solution
    assert brief.graph["r.1"].score > brief.graph["r.0"].score  # type: ignore[operator]


async def test_not_loaded_when_autoload_is_off(
    on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DISABLE_PLUGIN_AUTOLOAD", "1")
    orch = Orchestrator(runtime())
    assert "brevity" not in orch.registry.names("scorer")
