"""Dataset sources: where a dataset comes from and how it becomes a canonical folder.

A dataset in the config names a ``source`` and gives that source's ``options``. Each source registers a
:class:`Source`: its typed options (a dataclass: the defaults live there), an optional ``fetch`` (download
or locate the raw data, verify it) and a ``convert`` (raw data -> canonical folder, returning the
manifest). The DAG runs ``objguided fetch`` only for sources that have a fetch step.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from objguided.config import make_config
from objguided.errors import ConfigError


@dataclass(frozen=True)
class Source:
    name: str
    Options: type
    #: (options, raw_dir or None, out_dir) -> manifest dict (images, objects, ids, ...)
    convert: Callable[[Any, Path | None, Path], dict]
    #: (options, raw_dir) -> record of what was fetched (files, sizes, sha256); None: nothing to fetch
    fetch: Callable[[Any, Path], dict] | None = None
    #: options -> None when the raw data can be had, else a message saying what is missing and the
    #: layout expected (user-supplied data); the DAG then leaves the dataset out and says so
    unavailable: Callable[[Any], str | None] | None = None
    description: str = ""


_SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> Source:
    _SOURCES[source.name] = source
    return source


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def get_source(name: str) -> Source:
    _discover()
    if name not in _SOURCES:
        raise ConfigError(f"unknown dataset source '{name}' (known: {', '.join(sorted(_SOURCES))})")
    return _SOURCES[name]


def unavailable_reason(name: str, options: dict) -> str | None:
    """Why a dataset cannot run now (user data absent), or None."""
    source = get_source(name)
    if source.unavailable is None:
        return None
    return source.unavailable(make_config(source.Options, options, "options"))


def source_options(name: str, options: dict, where: str):
    """The source's typed options from a config dict; unknown keys and wrong types name the key."""
    return make_config(get_source(name).Options, options, where)
