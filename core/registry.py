"""Where implementations are found: a pluggy plugin manager and the (kind, name) registry it fills.

Start-up loads every module named under the ``lmforge`` entry point group (built-ins included) and asks
each for ``lmforge_register(registry)``. Objects may be registered as lazy ``"module:attribute"`` strings,
so building the registry imports no torch.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginNotFound, close_match

ENTRY_POINT_GROUP = "lmforge"
BUILTIN = "lmforge "  # the origin of lmforge's own registrations: "lmforge <version>"


def load_target(target: str):
    """The object a lazy ``"module:attribute"`` string names, imported now."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass
class Entry:
    kind: str
    name: str
    target: Any  # the object, or "module:attribute"
    origin: str  # the distribution that registered it
    _loaded: Any = field(default=None, repr=False)

    def load(self):
        if self._loaded is None:
            self._loaded = load_target(self.target) if isinstance(self.target, str) else self.target
        return self._loaded


class Registry:
    """Implementations by (kind, name). Filled through the ``lmforge_register`` hook."""

    def __init__(self):
        self._entries: dict[tuple[str, str], Entry] = {}
        self._origin = "unknown"

    def add(self, kind: str, name: str, obj) -> None:
        """Register ``obj`` (a class, function, or ``"module:attribute"`` string) as ``kind``/``name``.

        A later registration of the same (kind, name) replaces the earlier one, so a third-party plugin
        can override a built-in on purpose; it says so in a warning, since it changes what a config means.
        """
        previous = self._entries.get((kind, name))
        if previous is not None and previous.origin != self._origin and previous.origin.startswith(BUILTIN):
            warnings.warn(f"{kind} '{name}' from {self._origin} replaces lmforge's built-in {kind} '{name}'",
                          stacklevel=2)
        self._entries[(kind, name)] = Entry(kind, name, obj, self._origin)

    def get(self, kind: str, name: str):
        """The loaded object; an unknown name raises one line listing the available names."""
        return self.entry(kind, name).load()

    def entry(self, kind: str, name: str) -> Entry:
        try:
            return self._entries[(kind, name)]
        except KeyError:
            names = self.names(kind)
            if not names:
                raise PluginNotFound(
                    f"no implementations of kind '{kind}' are registered{close_match(kind, self.kinds())}; "
                    f"known kinds: {', '.join(self.kinds())}"
                ) from None
            raise PluginNotFound(
                f"unknown {kind} '{name}'{close_match(name, names)}; available: {', '.join(names)}"
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self._entries if k == kind)

    def kinds(self) -> list[str]:
        return sorted({k for k, _ in self._entries})

    def entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: (e.kind, e.name))

    def __contains__(self, key) -> bool:
        return key in self._entries


class _CoreStageRunner:
    """The core's own implementation of ``lmforge_run_stage``: run the stage. Wrappers surround it."""

    @hookspecs.hookimpl
    def lmforge_run_stage(self, stage, inputs, output_dir, context):
        return stage.run(inputs, output_dir, context)


_plugin_manager: pluggy.PluginManager | None = None
_registry: Registry | None = None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every entry-point plugin loaded."""
    global _plugin_manager
    if _plugin_manager is None:
        pm = pluggy.PluginManager("lmforge")
        pm.add_hookspecs(hookspecs)
        pm.register(_CoreStageRunner(), name="lmforge.core")
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        pm.check_pending()  # a misspelt hook name in any plugin fails here, not silently never called
        _plugin_manager = pm
    return _plugin_manager


def registry() -> Registry:
    """The registry every plugin has filled, each entry tagged with the package that registered it."""
    global _registry
    if _registry is None:
        pm = plugin_manager()
        origins = {id(plugin): f"{dist.project_name} {dist.version}" for plugin, dist in pm.list_plugin_distinfo()}
        reg = Registry()
        for impl in pm.hook.lmforge_register.get_hookimpls():
            reg._origin = origins.get(id(impl.plugin), impl.plugin_name)
            impl.function(registry=reg)
        reg._origin = "unknown"
        _registry = reg
    return _registry


def register_plugin(plugin, name: str | None = None) -> None:
    """Register a plugin object or module at run time (library use and tests), then rebuild the registry."""
    global _registry
    pm = plugin_manager()
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pm.unregister(plugin)
        raise
    _registry = None


def unregister_plugin(plugin) -> None:
    global _registry
    plugin_manager().unregister(plugin)
    _registry = None


@contextlib.contextmanager
def registered(kind: str, name: str, obj):
    """``obj`` (a class, function or ``"module:attribute"``) as ``kind``/``name`` for the length of a ``with``
    block (a notebook, a test): a plugin whose ``lmforge_register`` adds it, unregistered on the way out."""

    class OneImplementation:
        @hookspecs.hookimpl
        def lmforge_register(self, registry):
            registry.add(kind, name, obj)

    plugin = OneImplementation()
    register_plugin(plugin, name=f"{kind}:{name}")
    try:
        yield
    finally:
        unregister_plugin(plugin)


def reset() -> None:
    """Forget the loaded plugins (picks up newly installed packages on next use)."""
    global _plugin_manager, _registry
    _plugin_manager = None
    _registry = None
