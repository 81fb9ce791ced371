"""The workflow config: JSON-schema validation with defaults filled in, before any job runs."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from objguided.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def make_config(config_cls: type, overrides: dict[str, Any], where: str):
    """Build ``config_cls(**overrides)``, checking every key and value type.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     threshold: float = 0.5
    ...     steps: int = 10
    >>> make_config(C, {"steps": 3}, "methods.toy.params")
    C(threshold=0.5, steps=3)
    >>> make_config(C, {"stpes": 3}, "methods.toy.params")
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: methods.toy.params: unknown key 'stpes' (known: threshold, steps)
    >>> make_config(C, {"steps": "many"}, "methods.toy.params")
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: methods.toy.params.steps: expected int, got str ('many')
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(fields)})")
        _check_type(value, fields[key].type, f"{where}.{key}")
    return config_cls(**overrides)


_SIMPLE_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,),
                 "list": (list,)}


def _check_type(value: Any, annotation: Any, where: str) -> None:
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    allowed = _SIMPLE_TYPES.get(name)
    if allowed is None:
        return  # composite annotations (lists, unions) are checked by the method itself
    if isinstance(value, bool) and name != "bool":
        raise ConfigError(f"{where}: expected {name}, got bool ({value!r})")
    if not isinstance(value, allowed):
        raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} ({value!r})")


def _fill_defaults(instance: Any, schema: dict) -> None:
    """Fill schema defaults into ``instance`` in place, through properties and additionalProperties."""
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Check ``config`` against the schema and fill its defaults in place; returns it.

    >>> validate_config({"datasets": {"d": {"source": "synthetic"}},
    ...                  "methods": {"watershed": {}}})["datasets"]["d"]["split"]["fractions"]
    [0.6, 0.2, 0.2]
    >>> validate_config({"datasets": {"d": {"source": "synthetic", "n_images": 3}},
    ...                  "methods": {"watershed": {}}})
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: config: datasets.d: Additional properties are not allowed ('n_images' was unexpected)
    >>> validate_config({"datasets": {"d": {"source": "synthetic", "options": {"n_imags": 3}}},
    ...                  "methods": {"watershed": {}}})
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: datasets.d.options: unknown key 'n_imags' (known: generator, n_images, image_size, seed, params)
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        raise ConfigError(f"config: {where}: {first.message}")
    _fill_defaults(config, schema)
    from objguided.data.sources import source_options

    for name, dataset in config["datasets"].items():
        source_options(dataset["source"], dataset["options"], f"datasets.{name}.options")
    return config


def load_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from exc
    return validate_config(config)


def runs(config: dict, methods_filter=None) -> list[dict]:
    """Every (dataset, method, variant, seed) the config asks for, with its label and paper row."""
    out = []
    for dataset, dspec in config["datasets"].items():
        for method, mspec in config["methods"].items():
            if "datasets" in mspec and dataset not in mspec["datasets"]:
                continue
            for variant, vspec in mspec.get("variants", {"default": {}}).items():
                params = {**mspec.get("params", {}), **vspec.get("params", {})}
                label = vspec.get("label") or (method if variant == "default" else f"{method}/{variant}")
                for seed in config["seeds"]:
                    out.append({"dataset": dataset, "method": method, "variant": variant, "seed": seed,
                                "params": params, "label": label,
                                "paper_dataset": dspec.get("paper_dataset"),
                                "paper_method": vspec.get("paper_method", method if variant == "default" else None),
                                "evaluation": {**config["evaluation"], **vspec.get("evaluation", {})}})
    return out
