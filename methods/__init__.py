"""The method registry.

Every module in this package (and every module named in the ``objguided.methods`` entry-point group,
for methods that live in other packages) is imported on first use; each registers its method with
``@register``. See methods/README.md for how to add one.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from objguided.errors import ConfigError
from objguided_methods.base import Instance, Method

_REGISTRY: dict[str, Method] = {}
_ENTRY_POINTS_LOADED = False
_SKIP = {"base"}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__}: set a non-empty 'name' before registering")
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise ValueError(f"method '{cls.name}' is registered twice ({type(_REGISTRY[cls.name]).__module__} "
                         f"and {cls.__module__})")
    _REGISTRY[cls.name] = cls()
    return cls


def discover() -> None:
    """Import every method module of this package (each once), then the entry-point plugins (once)."""
    global _ENTRY_POINTS_LOADED
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")  # a no-op once imported
    if not _ENTRY_POINTS_LOADED:
        for ep in entry_points(group="objguided.methods"):
            ep.load()
        _ENTRY_POINTS_LOADED = True


def get(name: str) -> Method:
    discover()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method '{name}' (registered: {', '.join(sorted(_REGISTRY))}); "
                          "see methods/README.md to add one")
    return _REGISTRY[name]


def available() -> list[str]:
    discover()
    return sorted(_REGISTRY)


__all__ = ["Instance", "Method", "register", "get", "available", "discover"]
