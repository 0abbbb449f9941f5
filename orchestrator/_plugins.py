"""Plugin loading and the registry of what plugins register.

One :class:`PluginManager` per orchestrator (an instance, never a module global). Plugins come
from the ``orchestrator`` entry-point group; the ones our own distribution declares are the
built-ins and load even when autoload is off (like pytest's default plugins). Third-party
entry points obey:

- ``ORCHESTRATOR_DISABLE_PLUGIN_AUTOLOAD=1``: load none, except those named in
  ``ORCHESTRATOR_PLUGINS`` or passed as ``plugins=`` / ``--plugin``;
- ``ORCHESTRATOR_PLUGINS=a,b``: load only these third-party plugins;
- ``blocked`` / ``--no-plugin NAME``: never load NAME (built-ins included).

A plugin that fails to import is recorded with its cause (``failures``) and logged; the
others still load.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pluggy
from pydantic import BaseModel, ConfigDict, Field

from . import hookspecs
from ._exceptions import PluginError, UnknownComponentError
from ._specs import (
    AttentionBackendSpec,
    CliCommand,
    ComponentSpec,
    GraphSpec,
    RuntimeSpec,
    ToolSpec,
)

__all__ = ["PluginInfo", "PluginManager", "Registry"]

ENTRY_POINT_GROUP = "orchestrator"
DISTRIBUTION = "reasoning-orchestrator"
_log = logging.getLogger("orchestrator.plugins")

#: Registration hook → (registry category, the spec type it must return, the key field).
_REGISTRATION_HOOKS: Mapping[str, tuple[str, type[BaseModel], str]] = {
    "orchestrator_add_runtimes": ("runtime", RuntimeSpec, "kind"),
    "orchestrator_add_graphs": ("graph", GraphSpec, "name"),
    "orchestrator_add_strategies": ("strategy", ComponentSpec, "name"),
    "orchestrator_add_scorers": ("scorer", ComponentSpec, "name"),
    "orchestrator_add_routers": ("router", ComponentSpec, "name"),
    "orchestrator_add_memories": ("memory", ComponentSpec, "name"),
    "orchestrator_add_gates": ("gate", ComponentSpec, "name"),
    "orchestrator_add_retrievers": ("retriever", ComponentSpec, "name"),
    "orchestrator_add_tools": ("tool", ToolSpec, "name"),
    "orchestrator_add_attention_backends": ("attention_backend", AttentionBackendSpec, "name"),
    "orchestrator_add_cli_commands": ("cli_command", CliCommand, "name"),
}
CATEGORIES: tuple[str, ...] = tuple(c for c, _, _ in _REGISTRATION_HOOKS.values())


class PluginInfo(BaseModel):
    """One plugin as ``orchestrator plugins list`` shows it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str | None = None
    source: str  # "builtin", "entrypoint:<dist>", "object", "failed", "blocked"
    registers: dict[str, list[str]] = Field(default_factory=dict)
    error: str | None = None


class Registry:
    """Everything plugins registered, by category and name, with who registered it."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {c: {} for c in CATEGORIES}
        self.owners: dict[tuple[str, str], str] = {}
        self.failures: dict[str, str] = {}

    def add(self, category: str, key: str, spec: Any, plugin: str) -> None:
        # Attention backends are keyed by runtime too: two runtimes may share a name.
        if isinstance(spec, AttentionBackendSpec):
            key = f"{spec.runtime}:{spec.name}"
        owner = self.owners.get((category, key))
        if owner is not None:
            raise PluginError(
                f"{category} {key!r} is already registered by plugin {owner!r}",
                plugin=plugin,
            )
        self.items[category][key] = spec
        self.owners[(category, key)] = plugin

    def get(self, category: str, name: str) -> Any:
        """:raises UnknownComponentError: naming the registered alternatives."""
        try:
            return self.items[category][name]
        except KeyError:
            error = UnknownComponentError(category, name, list(self.items[category]))
            if self.failures:
                failed = "; ".join(f"{p}: {e}" for p, e in self.failures.items())
                error.args = (f"{error.args[0]}; plugins that failed to load: {failed}",)
            raise error from None

    def names(self, category: str) -> list[str]:
        return sorted(self.items[category])


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with our hookspecs, entry-point policy and registry."""

    def __init__(self) -> None:
        super().__init__("orchestrator")
        self.add_hookspecs(hookspecs)
        self.failures: dict[str, str] = {}
        self.sources: dict[str, tuple[str, str | None]] = {}
        self._registry: Registry | None = None

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is not None:
            self.sources.setdefault(registered, ("object", None))
        self._registry = None  # rebuilt lazily: a late plugin may register more
        return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        self._registry = None
        return super().unregister(plugin, name)

    def load_entrypoints(
        self,
        *,
        autoload: bool | None = None,
        allow: Iterable[str] | None = None,
        blocked: Iterable[str] = (),
    ) -> None:
        """Load the ``orchestrator`` entry-point group under the policy in the module doc.

        ``autoload`` and ``allow`` default to the environment variables.
        """
        if autoload is None:
            autoload = os.environ.get("ORCHESTRATOR_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
        if allow is None:
            env = os.environ.get("ORCHESTRATOR_PLUGINS", "")
            allow = [n.strip() for n in env.split(",") if n.strip()] or None
        allowed = set(allow) if allow is not None else None
        for name in blocked:
            self.set_blocked(name)
        seen: set[str] = set()
        for dist in importlib.metadata.distributions():
            dist_name = dist.metadata["Name"]
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                    continue
                seen.add(ep.name)
                builtin = dist_name == DISTRIBUTION
                if self.is_blocked(ep.name) or self.has_plugin(ep.name):
                    continue
                if not builtin:
                    wanted = allowed is None or ep.name in allowed
                    if not (wanted and (autoload or (allowed and ep.name in allowed))):
                        continue
                source = "builtin" if builtin else f"entrypoint:{dist_name}"
                self._load_one(ep, source, dist.version)

    def _load_one(self, ep: importlib.metadata.EntryPoint, source: str, version: str) -> None:
        try:
            plugin = ep.load()
            self.register(plugin, name=ep.name)
        except Exception as exc:
            cause = f"{type(exc).__name__}: {exc}"
            self.failures[ep.name] = cause
            self.sources[ep.name] = ("failed", version)
            _log.error(
                'Error importing plugin "%s": %s\n%s', ep.name, cause, traceback.format_exc()
            )
            return
        self.sources[ep.name] = (source, version)

    def import_plugin(self, module_name: str) -> None:
        """Register a module by dotted name (``--plugin pkg.mod``); errors name the module."""
        if self.is_blocked(module_name) or self.has_plugin(module_name):
            return
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(f"Error importing plugin: {exc}", plugin=module_name) from exc
        self.register(module, name=module_name)

    @property
    def registry(self) -> Registry:
        """Built on first use by calling each registration hook once per plugin."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        registry.failures = dict(self.failures)
        self.check_pending()
        for hook_name, (category, spec_type, key_field) in _REGISTRATION_HOOKS.items():
            caller = getattr(self.hook, hook_name)
            # Called per implementation (not through pluggy's fan-in) so each spec is
            # attributed to the plugin that returned it, for errors and `plugins list`.
            for impl in caller.get_hookimpls():  # registration order: first claims a name
                result = _call_registration(impl.function, impl.plugin_name, hook_name)
                for spec in result:
                    if not isinstance(spec, spec_type):
                        raise PluginError(
                            f"returned {type(spec).__name__}, expected a list of "
                            f"{spec_type.__name__}",
                            plugin=impl.plugin_name,
                            hook=hook_name,
                        )
                    key = getattr(spec, key_field)
                    registry.add(category, key, spec, impl.plugin_name)
        return registry

    def plugin_infos(self) -> list[PluginInfo]:
        """Every plugin: loaded (with what it registers), failed, or blocked."""
        registry = self.registry
        infos: dict[str, PluginInfo] = {}
        for name, plugin in self.list_name_plugin():
            source, version = self.sources.get(name, ("object", None))
            if plugin is None:
                source = "blocked"
            infos[name] = PluginInfo(name=name, version=version, source=source)
        for (category, key), owner in registry.owners.items():
            if owner in infos:
                infos[owner].registers.setdefault(category, []).append(key)
        for name, error in self.failures.items():
            _, version = self.sources.get(name, ("failed", None))
            infos[name] = PluginInfo(name=name, version=version, source="failed", error=error)
        for info in infos.values():
            for keys in info.registers.values():
                keys.sort()
        return sorted(infos.values(), key=lambda i: (i.source != "builtin", i.name))


def _call_registration(function: Callable[[], Any], plugin: str, hook: str) -> list[Any]:
    try:
        result = function()
    except Exception as exc:
        raise PluginError(f"raised {type(exc).__name__}: {exc}", plugin=plugin, hook=hook) from exc
    if result is None:
        return []
    if not isinstance(result, list | tuple):
        raise PluginError(
            f"must return a list, got {type(result).__name__}", plugin=plugin, hook=hook
        )
    return list(result)
