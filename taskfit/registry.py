"""Name -> implementation registries for strategies, metrics and backends.

Built-ins are declared as ``name -> "module:attr"`` specs and imported lazily, the same form a
third-party package uses in its ``taskfit.<kind>`` entry-point group. Duplicate names are an error.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from importlib.metadata import entry_points
from typing import Any

from taskfit.errors import TaskfitError


class Registry:
    def __init__(self, kind: str, builtins: dict[str, str], group: str | None = None):
        self.kind = kind
        self.group = group or f"taskfit.{kind}s"  # the entry-point group plugins register in
        self._specs: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}
        self._plugins_loaded = False
        for name, spec in builtins.items():
            self.add(name, spec)

    def add(self, name: str, spec: str | Any) -> None:
        """Register ``spec`` (a "module:attr" string or the object itself) under ``name``."""
        if name in self._specs or name in self._loaded:
            raise TaskfitError(f"duplicate {self.kind} name {name!r}")
        if isinstance(spec, str):
            self._specs[name] = spec
        else:
            self._loaded[name] = spec

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            self.add(ep.name, ep.value)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(set(self._specs) | set(self._loaded))

    def get(self, name: str) -> Any:
        return self._object(name)

    def _object(self, name: str) -> Any:
        self._load_plugins()
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._specs:
            raise TaskfitError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}")
        module, _, attr = self._specs[name].partition(":")
        obj = getattr(importlib.import_module(module), attr)
        self._loaded[name] = obj
        return obj

    def options(self, name: str) -> Any:
        """The pydantic model of the options ``name`` takes (None when the plugin declares none)."""
        return self.attribute(name, "Options")

    def attribute(self, name: str, attr: str) -> Any:
        """What ``name`` declares as ``attr`` (an options model, a hook): the attribute of the registered object,
        else of its module; None when neither has it."""
        obj = self._object(name)
        found = getattr(obj, attr, None)
        if found is None:
            found = getattr(sys.modules.get(getattr(obj, "__module__", ""), None), attr, None)
        return found


def create_with(factory: Any, *args: Any, workspace: Any = None, **kwargs: Any) -> Any:
    """Call a plugin's factory, handing it the workspace only when it declares a ``workspace`` parameter.

    Plugins that keep state (stored optimizations, tuned models, review labels, a judge's call cache) say
    so by taking ``workspace``; the rest never see it.
    """
    try:
        wants = "workspace" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: it cannot take one
        wants = False
    return factory(*args, **kwargs, workspace=workspace) if wants else factory(*args, **kwargs)
