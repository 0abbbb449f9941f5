"""The SGLang runtime's plugin: runtime kinds ``sglang``, ``sglang-router``,
``sglang-engine`` and the ``orchestrator sglang`` CLI command.

Registered from the ``orchestrator`` entry-point group like any third-party plugin. Importing
this module is cheap: the runtime, httpx and transformers load when a runtime is built.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import CliCommand, ConfigError, RuntimeSpec, RuntimeUnavailable, hookimpl

if TYPE_CHECKING:
    from .runtime import SGLangRuntime
    from .tokenizer import ChatTokenizer

__all__ = ["orchestrator_add_cli_commands", "orchestrator_add_runtimes"]


@hookimpl
def orchestrator_add_runtimes() -> list[RuntimeSpec]:
    return [
        RuntimeSpec(
            kind="sglang",
            factory=build_sglang,
            description="SGLang server(s): sglang:http://host:port[,http://...][?options]",
        ),
        RuntimeSpec(
            kind="sglang-router",
            factory=build_router,
            description="an SGLang router in front of servers: sglang-router:http://host:port",
        ),
        RuntimeSpec(
            kind="sglang-engine",
            factory=build_engine,
            description="in-process sglang.Engine: sglang-engine:/model/dir[?server.KEY=VALUE]",
        ),
    ]


@hookimpl
def orchestrator_add_cli_commands() -> list[CliCommand]:
    from .cli import sglang_command

    return [sglang_command()]


def build_sglang(target: str, options: Mapping[str, str]) -> SGLangRuntime:
    """``sglang:URL[,URL...]``: one server, or several with affinity and failover."""
    from .config import parse_config, parse_urls
    from .runtime import SGLangRuntime

    config = parse_config(options)
    urls = parse_urls(target)
    return SGLangRuntime.connect(urls, _tokenizer(config.tokenizer, urls[0]), config)


def build_router(target: str, options: Mapping[str, str]) -> SGLangRuntime:
    """``sglang-router:URL``: the router balances (its own cache-aware policy) and fails over;
    the runtime still prefills a fan-out's prefix first."""
    from .config import parse_config, parse_urls
    from .runtime import SGLangRuntime

    config = parse_config(options)
    urls = parse_urls(target, single=True)
    return SGLangRuntime.connect(urls, _tokenizer(config.tokenizer, urls[0]), config)


def build_engine(target: str, options: Mapping[str, str]) -> SGLangRuntime:
    """``sglang-engine:MODEL_DIR``: options as for ``sglang``, plus ``server.KEY=VALUE`` for
    ``sglang.Engine`` (values parsed as JSON when they are, else strings). The tokenizer
    defaults to the model directory's."""
    from .config import parse_config
    from .engine import EngineBackend
    from .runtime import SGLangRuntime
    from .tokenizer import ChatTokenizer

    server_args = {
        k.removeprefix("server."): _value(v) for k, v in options.items() if k.startswith("server.")
    }
    config = parse_config({k: v for k, v in options.items() if not k.startswith("server.")})
    if not target:
        raise ConfigError("needs the model directory: sglang-engine:/path/to/model", field="target")
    tokenizer = ChatTokenizer.load(config.tokenizer or target)
    return SGLangRuntime([EngineBackend.start(target, **server_args)], tokenizer, config)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _tokenizer(option: str | None, url: str) -> ChatTokenizer:
    """The tokenizer an option names: a path, ``server`` (the server's own tokenizer path,
    when this machine has it), or None (SmolLM2's GGUF)."""
    from .tokenizer import ChatTokenizer

    if option != "server":
        return ChatTokenizer.load(option)
    path = _server_tokenizer_path(url)
    if not Path(path).exists():
        raise ConfigError(
            f"the server's tokenizer path {path!r} is not on this machine; pass tokenizer=PATH",
            field="tokenizer",
        )
    return ChatTokenizer.load(path)


def _server_tokenizer_path(url: str) -> str:
    # A blocking stdlib call: runtime factories are synchronous and run once at set-up.
    try:
        with urllib.request.urlopen(f"{url}/model_info", timeout=10) as response:
            info = json.load(response)
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise RuntimeUnavailable(
            f"tokenizer=server: cannot read {url}/model_info: {exc}", runtime=f"sglang@{url}"
        ) from exc
    path = info.get("tokenizer_path") or info.get("model_path")
    if not isinstance(path, str):
        raise RuntimeUnavailable(
            f"{url}/model_info names no tokenizer_path: {info!r:.200}", runtime=f"sglang@{url}"
        )
    return path
