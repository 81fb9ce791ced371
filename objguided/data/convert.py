"""The fetch and convert steps for any registered dataset source."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from objguided.data.canonical import write_manifest
from objguided.data.fetch import exclusively, source_default_hashes
from objguided.data.sources import get_source, source_options
from objguided.engine.atomic import write_json
from objguided.errors import ConfigError

log = logging.getLogger("objguided.convert")

FETCH_RECORD = "fetched.json"
#: the lock a conversion holds on its output folder (removed when it ends)
CONVERT_LOCK = ".convert.lock"
#: folders a conversion builds aside inside its output before swapping them in (dsb2018: .convert-*,
#: the user-data sources' StagedOutput: .staging-*); a killed conversion leaves its own behind
STAGING_GLOBS = (".convert-*", ".staging-*")


def fetch(spec: dict, raw_dir: str | Path) -> dict:
    source = get_source(spec["source"])
    if source.fetch is None:
        raise ConfigError(f"source '{source.name}' has nothing to fetch")
    raw_dir = Path(raw_dir)
    options = source_options(source.name, spec.get("options", {}), "options")
    with _defaults_are_not_binding(spec, options):
        record = source.fetch(options, raw_dir)
    write_json(raw_dir / FETCH_RECORD, record)  # written last: its presence means the fetch is complete
    return record


def _defaults_are_not_binding(spec: dict, options):
    """A sha256 the config sets is binding; the source's own default list (a mirror's hash) only vouches
    for the files it matches, and any other file is trusted on first use (the card says which)."""
    configured = "sha256" in (spec.get("options") or {})
    defaults = getattr(options, "sha256", None)
    if configured or not defaults:
        return contextlib.nullcontext()
    return source_default_hashes(defaults)


def convert(spec: dict, out: str | Path, raw_dir: str | Path | None = None) -> dict:
    source = get_source(spec["source"])
    out = Path(out)
    options = source_options(source.name, spec.get("options", {}), "options")
    out.mkdir(parents=True, exist_ok=True)
    # one conversion of a folder at a time: then every staging folder found here is a dead one's
    with exclusively(out / CONVERT_LOCK, f"a conversion into {out}"):
        remove_stale_staging(out)
        manifest = source.convert(options, Path(raw_dir) if raw_dir else None, out)
        write_manifest(out, manifest)
    return manifest


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders a killed conversion left in ``out``; call it holding ``out``'s lock."""
    stale = sorted(p for pattern in STAGING_GLOBS for p in out.glob(pattern) if p.is_dir())
    for path in stale:
        log.info("%s: removing the staging folder of an earlier conversion that did not finish", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale
