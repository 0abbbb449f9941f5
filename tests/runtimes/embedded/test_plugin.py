"""Registration through the core's hooks and runtime-spec parsing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import torch
from orchestrator.runtimes.embedded import EmbeddedRuntime
from orchestrator.runtimes.embedded.attention import KVCache, Rope, SdpaBackend, SegmentBackend
from orchestrator.runtimes.embedded.plugin import make_runtime

from orchestrator import ConfigError, PluginManager
from orchestrator._config import parse_runtime_spec


@pytest.fixture(scope="module")
def registry() -> object:
    manager = PluginManager()
    manager.load_entrypoints(autoload=False)
    return manager.registry


def test_the_runtime_and_its_backends_are_registered(registry: object) -> None:
    assert registry.owners[("runtime", "embedded")] == "embedded"  # type: ignore[attr-defined]
    assert registry.get("runtime", "embedded").factory is make_runtime  # type: ignore[attr-defined]
    backends = {
        name: registry.get("attention_backend", name).factory
        for name in ("embedded:sdpa", "embedded:segment")
    }  # type: ignore[attr-defined]
    # The factories import torch on first use; each builds its backend class.
    cache = KVCache(1, 16, 4, 1, 8, dtype=torch.float32, device=torch.device("cpu"))
    rope = Rope(8, 10000.0, torch.device("cpu"))
    built = {name: type(factory(cache, rope, 2)) for name, factory in backends.items()}
    assert built == {"embedded:sdpa": SdpaBackend, "embedded:segment": SegmentBackend}


def test_loading_plugins_does_not_import_torch() -> None:
    code = (
        "import sys, orchestrator; o = orchestrator.Orchestrator(runtimes={}); o.registry; "
        "print(sorted(m for m in ('torch', 'transformers', 'xgrammar') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_spec_builds_a_configured_runtime(registry: object, tiny_model_dir: Path) -> None:
    kind, target, options = parse_runtime_spec(
        f"embedded:{tiny_model_dir}?layers=1&block_size=8&dtype=fp32"
    )
    runtime = registry.get("runtime", kind).factory(target, options)  # type: ignore[attr-defined]
    assert isinstance(runtime, EmbeddedRuntime)
    assert runtime.model_config.num_layers == 1
    assert runtime.engine.blocks.block_size == 8
    assert runtime.model == tiny_model_dir.name
    anyio.run(runtime.aclose)


def test_a_registered_backend_factory_can_be_chosen(registry: object, tiny_model_dir: Path) -> None:
    factory = registry.get("attention_backend", "embedded:segment").factory  # type: ignore[attr-defined]
    runtime = EmbeddedRuntime.from_pretrained(str(tiny_model_dir), attention=factory)
    assert isinstance(runtime.engine.runner.backend, SegmentBackend)
    anyio.run(runtime.aclose)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bogus": "1"}, r"^embedded: unknown option 'bogus' \(known: attention, block_size, "),
        ({"layers": "two"}, r"^layers: expected an integer, got 'two'$"),
        ({"dtype": "int4"}, r"^dtype: unknown dtype 'int4' \(known: fp32, float32, bf16"),
    ],
)
def test_bad_spec_options_name_the_option(
    tiny_model_dir: Path, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_runtime(str(tiny_model_dir), options)
