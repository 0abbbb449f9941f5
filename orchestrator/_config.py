"""Run configuration: what to run and under which limits, validated at the boundary.

Component options (``graph_options``, ``strategy_options``...) are validated against the
config model the component registered, when the run starts; an unknown or mistyped field is
a :class:`ConfigError` that names it (``strategy.width: ...``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._budget import BudgetLimits
from ._exceptions import ConfigError

__all__ = ["RunConfig", "parse_runtime_spec", "validate_options"]

#: Components a run may name, and the RunConfig fields that hold name and options.
COMPONENTS: tuple[str, ...] = ("graph", "strategy", "scorer", "router", "memory", "gate")


class RunConfig(BaseModel):
    """Everything that defines a run except the question and the runtimes.

    ``strategy``/``scorer``/``router``/``memory``/``gate`` left at ``None`` mean "the graph's
    default" (a graph that needs none ignores them).
    """

    model_config = ConfigDict(extra="forbid")

    graph: str = "search"
    graph_options: dict[str, Any] = Field(default_factory=dict)
    strategy: str | None = None
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    scorer: str | None = None
    scorer_options: dict[str, Any] = Field(default_factory=dict)
    router: str | None = None
    router_options: dict[str, Any] = Field(default_factory=dict)
    memory: str | None = None
    memory_options: dict[str, Any] = Field(default_factory=dict)
    gate: str | None = None
    gate_options: dict[str, Any] = Field(default_factory=dict)
    #: The runtime generations use unless a router or the graph picks another.
    runtime: str | None = None
    budget: BudgetLimits = Field(default_factory=BudgetLimits)
    seed: int = 0
    #: Most runtime and scorer calls in flight at once.
    max_concurrency: int = Field(64, ge=1)
    #: ``isolate``: a failing node is recorded and the run goes on; ``fail_fast``: it ends the run.
    on_error: Literal["isolate", "fail_fast"] = "isolate"
    #: Reference answer handed to scorers (evaluation).
    reference: str | None = None

    @classmethod
    def build(cls, **fields: Any) -> RunConfig:
        """Like the constructor, but a bad field raises :class:`ConfigError` naming it."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise config_error(exc, "run") from exc

    def with_settings(self, settings: Mapping[str, str]) -> RunConfig:
        """Apply ``--set`` style settings: ``graph.FIELD=V``, ``strategy.FIELD=V``... (values
        parsed as JSON when they are JSON, else kept as strings), ``budget.FIELD=V`` and
        top-level fields such as ``seed=3``."""
        data = self.model_dump()
        for key, raw in settings.items():
            value = _parse_value(raw)
            section, _, field = key.partition(".")
            if not field:
                data[section] = value
            elif section in COMPONENTS:
                data[f"{section}_options"][field] = value
            elif section == "budget":
                data["budget"][field] = value
            else:
                raise ConfigError(
                    f"unknown section {section!r} (use one of {', '.join(COMPONENTS)}, budget)",
                    field=key,
                )
        return RunConfig.build(**data)


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def config_error(exc: ValidationError, section: str) -> ConfigError:
    """One readable error naming the first bad field of a pydantic validation error."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    field = f"{section}.{where}" if where else section
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return ConfigError(message, field=field)


def validate_options(model: type[BaseModel], options: Mapping[str, Any], section: str) -> Any:
    """Validate component options; :raises ConfigError: naming ``section.field``."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise config_error(exc, section) from exc


def parse_runtime_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``KIND:TARGET?key=value&...`` into (kind, target, options).

    :raises ConfigError: if there is no ``KIND:`` prefix.
    """
    kind, sep, rest = spec.partition(":")
    if not sep or not kind or not kind.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(
            f"runtime spec {spec!r} must look like KIND:TARGET[?key=value&...]", field="runtime"
        )
    target, _, query = rest.partition("?")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        raise ConfigError(f"bad options {query!r} in runtime spec", field="runtime") from exc
    return kind, target, options
