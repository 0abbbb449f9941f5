"""The plugin: runtime kinds through the registry, spec options, and the CLI command."""

from __future__ import annotations

import pytest
from orchestrator.runtimes.sglang import plugin
from orchestrator.runtimes.sglang.config import parse_config, parse_urls
from orchestrator.runtimes.sglang.launcher import free_port
from orchestrator.runtimes.sglang.runtime import SGLangRuntime
from orchestrator.runtimes.sglang.tokenizer import ChatTokenizer

from orchestrator import Capability, ConfigError, PluginManager, RuntimeUnavailable


@pytest.fixture
def registry_plugin() -> PluginManager:
    manager = PluginManager()
    manager.register(plugin, name="sglang")
    return manager


def test_registers_three_runtime_kinds_and_the_cli_command(
    registry_plugin: PluginManager,
) -> None:
    registry = registry_plugin.registry
    assert [k for k in registry.names("runtime") if k.startswith("sglang")] == [
        "sglang",
        "sglang-engine",
        "sglang-router",
    ]
    assert registry.names("cli_command") == ["sglang"]
    assert registry.owners[("runtime", "sglang")] == "sglang"


def test_the_installed_entry_point_is_this_plugin() -> None:
    manager = PluginManager()
    manager.load_entrypoints(autoload=False)
    assert manager.get_plugin("sglang") is plugin
    assert "sglang" not in manager.failures


async def test_a_spec_builds_a_runtime_over_several_servers(
    registry_plugin: PluginManager, tokenizer: ChatTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tokenizer was loaded once for the session; the factory would load it again.
    monkeypatch.setattr(ChatTokenizer, "load", classmethod(lambda cls, source=None: tokenizer))
    spec = registry_plugin.registry.get("runtime", "sglang")
    runtime = spec.factory(
        "http://a:30000,http://b:30000/",
        {"min_prefix_tokens": "64", "deterministic": "true", "affinity": "prompt"},
    )
    assert isinstance(runtime, SGLangRuntime)
    assert [b.url for b in runtime.pool.backends] == ["http://a:30000", "http://b:30000"]
    assert runtime.config.min_prefix_tokens == 64 and runtime.config.affinity == "prompt"
    assert Capability.DETERMINISTIC_SAMPLING in runtime.capabilities
    await runtime.aclose()
    router = registry_plugin.registry.get("runtime", "sglang-router").factory("http://r:30000", {})
    assert [b.url for b in router.pool.backends] == ["http://r:30000"]
    await router.aclose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_prefix": "3"}, "min_prefix: Extra inputs are not permitted"),
        (
            {"min_prefix_tokens": "0"},
            "min_prefix_tokens: Input should be greater than or equal to 1 \\(got '0'\\)",
        ),
        ({"affinity": "tree"}, "affinity: Input should be 'auto', 'request' or 'prompt'"),
        ({"fanout": "perhaps"}, "fanout: Input should be a valid boolean"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(
    options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(options)


@pytest.mark.parametrize(
    ("target", "single", "message"),
    [
        ("", False, "target: needs at least one server URL"),
        ("localhost:30000", False, "'localhost:30000' is not an http\\(s\\)://host:port URL"),
        ("http://a:1,http://a:1", False, "duplicate server URL"),
        ("http://a:1,http://b:1", True, "a router is one URL, got 2"),
    ],
)
def test_bad_targets_are_config_errors(target: str, single: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_urls(target, single=single)


def test_tokenizer_server_needs_a_reachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        RuntimeUnavailable,
        match=r"tokenizer=server: cannot read "
        r"http://127\.0\.0\.1:\d+/model_info",
    ):
        plugin.build_sglang(url, {"tokenizer": "server"})


def test_engine_without_sglang_installed_says_how_to_get_it(
    tokenizer: ChatTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ChatTokenizer, "load", classmethod(lambda cls, source=None: tokenizer))
    with pytest.raises(
        ConfigError,
        match=r"sglang-engine: the in-process SGLang runtime needs "
        r"the sglang package: pip install 'reasoning-orchestrator\[sglang\]'",
    ):
        plugin.build_engine("/models/smol", {"server.mem_fraction_static": "0.5"})
