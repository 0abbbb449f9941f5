"""What registration hooks return: a named factory for one component, plus its config model.

A spec is data. The executor validates a component's options against ``config_model`` (an
unknown field is rejected by name) and calls ``factory(config)`` once per run.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AttentionBackendSpec",
    "CliCommand",
    "ComponentSpec",
    "EmptyConfig",
    "GraphSpec",
    "RuntimeSpec",
    "ToolSpec",
]


class EmptyConfig(BaseModel):
    """Config of a component that takes no options (any option given is an error)."""

    model_config = ConfigDict(extra="forbid")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class ComponentSpec(_Spec):
    """A search strategy, scorer, router, memory, gate or retriever.

    :ivar factory: ``factory(config) -> component``; ``config`` is an instance of
        ``config_model``. Called once per run that uses the component.
    """

    name: str
    factory: Callable[[Any], Any]
    config_model: type[BaseModel] = EmptyConfig
    description: str = ""


class GraphSpec(ComponentSpec):
    """A reasoning pattern. ``factory(config)`` returns an object with
    ``async def run(self, ctx: RunContext) -> str | None`` (the answer).

    :ivar node_kinds: attribute models of the node kinds this graph adds.
    """

    node_kinds: Mapping[str, type[BaseModel]] = Field(default_factory=dict)


class RuntimeSpec(_Spec):
    """A runtime kind: ``factory(target, options)`` builds a runtime from a SPEC
    ``KIND:TARGET?key=value&...`` (``options`` are the query parameters, as strings)."""

    kind: str
    factory: Callable[[str, Mapping[str, str]], Any]
    description: str = ""


class ToolSpec(_Spec):
    """A tool a model may call: JSON-schema ``parameters`` and an async callable taking the
    parsed arguments and returning a JSON-serialisable result."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    call: Callable[[dict[str, Any]], Awaitable[Any]]


class AttentionBackendSpec(_Spec):
    """An attention implementation for one runtime kind (``runtime``), chosen by ``name``."""

    runtime: str
    name: str
    factory: Callable[..., Any]
    description: str = ""


class CliCommand(_Spec):
    """A subcommand of the ``orchestrator`` CLI: ``configure`` adds its arguments, ``run``
    executes it and returns the exit status."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
