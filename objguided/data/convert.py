"""The fetch and convert steps for any registered dataset source."""

from __future__ import annotations

from pathlib import Path

from objguided.data.canonical import write_manifest
from objguided.data.sources import get_source, source_options
from objguided.engine.atomic import write_json
from objguided.errors import ConfigError

FETCH_RECORD = "fetched.json"


def fetch(spec: dict, raw_dir: str | Path) -> dict:
    source = get_source(spec["source"])
    if source.fetch is None:
        raise ConfigError(f"source '{source.name}' has nothing to fetch")
    raw_dir = Path(raw_dir)
    record = source.fetch(source_options(source.name, spec.get("options", {}), "options"), raw_dir)
    write_json(raw_dir / FETCH_RECORD, record)  # written last: its presence means the fetch is complete
    return record


def convert(spec: dict, out: str | Path, raw_dir: str | Path | None = None) -> dict:
    source = get_source(spec["source"])
    out = Path(out)
    options = source_options(source.name, spec.get("options", {}), "options")
    manifest = source.convert(options, Path(raw_dir) if raw_dir else None, out)
    write_manifest(out, manifest)
    return manifest
