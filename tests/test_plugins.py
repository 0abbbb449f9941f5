"""Plugin loading: built-ins, entry points, broken and blocked plugins, the registry."""

from __future__ import annotations

import importlib.metadata
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from orchestrator import ComponentSpec, PluginError, PluginManager, UnknownComponentError, hookimpl

BUILTINS = {"search-graph", "best-of-n", "answer-match"}


class FakeDist:
    """Just enough of importlib.metadata.Distribution for the loader."""

    def __init__(self, name: str, entry_points: dict[str, str]) -> None:
        self.metadata = {"Name": name}
        self.version = "9.9"
        self.entry_points = [
            importlib.metadata.EntryPoint(ep, value, "orchestrator")
            for ep, value in entry_points.items()
        ]


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two third-party plugins on sys.path, one good and one that fails to import."""
    (tmp_path / "good_plugin.py").write_text(
        textwrap.dedent(
            """
            from orchestrator import ComponentSpec, hookimpl

            class Constant:
                def __init__(self, config):
                    pass

                async def score(self, batch, ctx):
                    return [0.5] * len(batch.candidates)

            @hookimpl
            def orchestrator_add_scorers():
                return [ComponentSpec(name="constant", factory=Constant)]
            """
        )
    )
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('Don\\'t hide me!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = list(importlib.metadata.distributions())
    fakes = [
        FakeDist("good-dist", {"good": "good_plugin"}),
        FakeDist("broken-dist", {"broken": "broken_plugin"}),
    ]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [*real, *fakes])
    monkeypatch.delenv("ORCHESTRATOR_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("ORCHESTRATOR_PLUGINS", raising=False)


def loaded(pm: PluginManager) -> set[str]:
    return {name for name, plugin in pm.list_name_plugin() if plugin is not None}


def test_builtins_load_from_our_entry_points() -> None:
    pm = PluginManager()
    pm.load_entrypoints(autoload=False)
    assert loaded(pm) >= BUILTINS
    assert {pm.sources[n][0] for n in BUILTINS} == {"builtin"}
    assert pm.registry.names("graph") == ["search"] or "search" in pm.registry.names("graph")


def test_good_and_broken_third_party(third_party: None, caplog: pytest.LogCaptureFixture) -> None:
    pm = PluginManager()
    with caplog.at_level(logging.ERROR, logger="orchestrator.plugins"):
        pm.load_entrypoints()
    assert "good" in loaded(pm)
    assert "broken" not in loaded(pm)
    assert pm.failures == {"broken": "RuntimeError: Don't hide me!"}
    assert 'Error importing plugin "broken": RuntimeError: Don\'t hide me!' in caplog.text
    assert "Traceback" in caplog.text  # the cause is shown, not hidden
    infos = {i.name: i for i in pm.plugin_infos()}
    assert infos["good"].source == "entrypoint:good-dist"
    assert infos["good"].registers == {"scorer": ["constant"]}
    assert infos["broken"].source == "failed"
    with pytest.raises(
        UnknownComponentError, match="plugins that failed to load: broken: RuntimeError"
    ):
        pm.registry.get("scorer", "nope")


def test_autoload_disabled_by_env(third_party: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = PluginManager()
    pm.load_entrypoints()
    assert loaded(pm) == BUILTINS | (loaded(pm) - {"good", "broken"})
    assert "good" not in loaded(pm) and pm.failures == {}


def test_allow_list_loads_named_plugins_even_without_autoload(
    third_party: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("ORCHESTRATOR_PLUGINS", "good")
    pm = PluginManager()
    pm.load_entrypoints()
    assert "good" in loaded(pm)
    assert pm.failures == {}  # broken was not asked for


def test_blocked_plugins_never_load(third_party: None) -> None:
    pm = PluginManager()
    pm.load_entrypoints(blocked=["good", "best-of-n"])
    assert "good" not in loaded(pm)
    assert "best-of-n" not in loaded(pm)
    with pytest.raises(UnknownComponentError, match=r"unknown strategy 'best_of_n' \(registered: "):
        pm.registry.get("strategy", "best_of_n")
    infos = {i.name: i.source for i in pm.plugin_infos()}
    assert infos["good"] == infos["best-of-n"] == "blocked"


def test_duplicate_names_name_both_plugins() -> None:
    class A:
        @hookimpl
        def orchestrator_add_scorers(self) -> list[ComponentSpec]:
            return [ComponentSpec(name="dup", factory=object)]

    pm = PluginManager()
    pm.register(A(), name="first")
    pm.register(A(), name="second")
    with pytest.raises(
        PluginError,
        match=r"plugin \"second\": scorer 'dup' is already registered by plugin 'first'",
    ):
        pm.registry  # noqa: B018 - building the registry is the act under test


def test_wrong_return_type_names_plugin_and_hook() -> None:
    class Bad:
        @hookimpl
        def orchestrator_add_strategies(self) -> Any:
            return ["not a spec"]

    pm = PluginManager()
    pm.register(Bad(), name="bad")
    with pytest.raises(
        PluginError,
        match=(
            r'plugin "bad" in hook "orchestrator_add_strategies": '
            r"returned str, expected a list of ComponentSpec"
        ),
    ):
        pm.registry  # noqa: B018


def test_unknown_hook_is_rejected_at_registration() -> None:
    class Typo:
        @hookimpl
        def orchestrator_add_scorer(self) -> list[Any]:  # missing "s"
            return []

    pm = PluginManager()
    pm.register(Typo(), name="typo")
    with pytest.raises(Exception, match="unknown hook 'orchestrator_add_scorer' in plugin"):
        pm.check_pending()


def test_late_registration_rebuilds_the_registry() -> None:
    pm = PluginManager()
    assert pm.registry.names("scorer") == []

    class Late:
        @hookimpl
        def orchestrator_add_scorers(self) -> list[ComponentSpec]:
            return [ComponentSpec(name="late", factory=object)]

    pm.register(Late(), name="late")
    assert pm.registry.names("scorer") == ["late"]


def test_import_plugin_error_names_the_module() -> None:
    pm = PluginManager()
    with pytest.raises(
        PluginError, match=r'plugin "no_such_module_xyz": Error importing plugin: No module named'
    ):
        pm.import_plugin("no_such_module_xyz")
