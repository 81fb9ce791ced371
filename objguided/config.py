"""The workflow config, checked whole before any job runs.

:func:`validate_config`: the JSON schema (keys, types, names, defaults filled in), then what a schema cannot
say: split fractions summing to 1, ``methods.X.datasets`` naming configured datasets, every dataset's source
options and every (method, variant)'s ``params`` built as the job will build them.

A typed config (a method's ``Config``, a source's options) is a dataclass whose annotations declare each
field once: its type (``int``, ``float``, ``bool``, ``str``, ``dict``, ``Literal[...]``, ``list[...]``,
``X | None``) and, through ``typing.Annotated``, its constraints (:class:`Range` for numbers, :class:`Len`
for lists and strings). :func:`make_config` checks every given value against them, naming the key path;
rules between fields (objguided's ``beta <= k``) stay a short hook of the config's owner.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal, Union

import jsonschema
import yaml

from objguided.errors import ConfigError

# objguided/schemas links to workflow/schemas in the checkout (the Snakemake convention); a wheel holds a copy
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


# ----------------------------------------------------------------------------------------------- typed configs


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number: ``min``/``max`` inclusive, ``gt``/``lt`` exclusive; ``multiple_of`` a step.

    >>> Range(min=1).text(), Range(gt=0, max=1).text(), Range(min=32, multiple_of=32).text()
    ('>= 1', 'in (0, 1]', '>= 32 and a multiple of 32')
    """

    min: float | None = None
    max: float | None = None
    gt: float | None = None
    lt: float | None = None
    multiple_of: int | None = None

    def holds(self, v) -> bool:
        return ((self.min is None or v >= self.min) and (self.gt is None or v > self.gt)
                and (self.max is None or v <= self.max) and (self.lt is None or v < self.lt)
                and (self.multiple_of is None or v % self.multiple_of == 0))

    def text(self) -> str:
        low = (">=", self.min) if self.min is not None else (">", self.gt) if self.gt is not None else None
        high = ("<=", self.max) if self.max is not None else ("<", self.lt) if self.lt is not None else None
        if low and high:
            left, right = "[" if self.min is not None else "(", "]" if self.max is not None else ")"
            parts = [f"in {left}{low[1]:g}, {high[1]:g}{right}"]
        else:
            parts = [f"{op} {v:g}" for op, v in (low or high,) if low or high]
        if self.multiple_of is not None:
            parts.append(f"a multiple of {self.multiple_of}")
        return " and ".join(parts)


@dataclasses.dataclass(frozen=True)
class Len:
    """How many items a list (characters a string) may have: ``Len(1)`` non-empty, ``Len(2, 2)`` exactly two.

    >>> Len(1).text("a list"), Len(2, 2).text("a list"), Len(0, 3).text("a list")
    ('a non-empty list', 'a list of 2 items', 'a list of at most 3 items')
    """

    min: int = 0
    max: int | None = None

    def holds(self, v) -> bool:
        return len(v) >= self.min and (self.max is None or len(v) <= self.max)

    def text(self, noun: str) -> str:
        if self.max is None:
            return noun.replace("a ", "a non-empty ", 1) if self.min == 1 else f"{noun} of at least {self.min} items"
        if self.min == self.max:
            return f"{noun} of {self.min} items"
        return f"{noun} of at most {self.max} items" if self.min == 0 else f"{noun} of {self.min} to {self.max} items"


# The usual declarations, by name.
PosInt = Annotated[int, Range(min=1)]
Count = Annotated[int, Range(min=0)]
PosFloat = Annotated[float, Range(gt=0)]
NonNegFloat = Annotated[float, Range(min=0)]
Fraction = Annotated[float, Range(gt=0, lt=1)]  # a probability or threshold strictly inside (0, 1)
Name = Annotated[str, Len(1)]  # a non-empty string (a model name, a file path)

_NOUNS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
          list: "a list"}
_UNIONS = (Union, types.UnionType)


def _parts(tp) -> tuple[Any, tuple]:
    """(the bare type, its Annotated constraints)."""
    if typing.get_origin(tp) is Annotated:
        return tp.__origin__, tp.__metadata__
    return tp, ()


def describe(tp) -> str:
    """What a value of the annotation ``tp`` must be, in words.

    >>> describe(Annotated[int, Range(min=1)] | None)
    'an integer >= 1 or null'
    >>> describe(Literal["paper", "code"]), describe(Annotated[list[PosFloat], Len(1)])
    ('one of paper, code', 'a non-empty list (each item a number > 0)')
    """
    base, checks = _parts(tp)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin in _UNIONS:
        return " or ".join([describe(a) for a in args if a is not type(None)] + ["null"] * (type(None) in args))
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    kind = origin or base
    text = _NOUNS.get(kind, getattr(kind, "__name__", str(kind)))
    for check in checks:
        text = check.text(text) if isinstance(check, Len) else f"{text} {check.text()}"
    if kind is list and args:
        text += f" (each item {describe(args[0])})"
    return text


class _Bad(Exception):
    """One value that fails its declaration: where it is, what it must be, what it is."""

    def __init__(self, path: str, tp, value):
        super().__init__(path)
        self.path, self.expected, self.value = path, describe(tp), value

    def message(self) -> str:
        number = _as_float(self.value) if isinstance(self.value, str) else None
        hint = ""
        if number is not None and "integer" in self.expected:
            example = f" such as {int(number)}" if number.is_integer() else ""
            hint = (f" (text, not a number: YAML 1.1 reads 1e3 and anything quoted as a string; write a plain "
                    f"whole number{example})")
        return f"{self.path}: expected {self.expected}, got {self.value!r}{hint}"


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def check_value(value, tp, path: str):
    """``value`` checked against the annotation ``tp``: returned as is, or raises ConfigError naming ``path``.

    PyYAML reads YAML 1.1, where ``1e-3`` (no dot in the mantissa) is a string, not a number: where a float is
    declared, a string that spells a finite number is taken as that number. A string where an integer is
    declared is refused, with that hint when it spells a number.

    >>> check_value("1e-3", PosFloat, "methods.x.params.lr")
    0.001
    >>> check_value(0, Annotated[int, Range(min=1)] | None, "methods.x.params.max_steps")
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: methods.x.params.max_steps: expected an integer >= 1 or null, got 0
    >>> check_value([0.5, -1], list[PosFloat], "methods.x.params.crop_scales")
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: methods.x.params.crop_scales[1]: expected a number > 0, got -1
    >>> check_value("1e3", PosInt, "datasets.d.options.n_images")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: datasets.d.options.n_images: expected an integer >= 1, got '1e3' (text, not a
    number: YAML 1.1 reads 1e3 and anything quoted as a string; write a plain whole number such as 1000)
    """
    try:
        return _check(value, tp, path)
    except _Bad as bad:
        raise ConfigError(bad.message()) from None


def _check(value, tp, path: str):
    base, checks = _parts(tp)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin in _UNIONS:
        if value is None and type(None) in args:
            return None
        failed = []
        for alt in (a for a in args if a is not type(None)):
            try:
                return _check(value, alt, path)
            except _Bad as bad:
                failed.append(bad)
        if len(failed) == 1 and failed[0].path != path:
            raise failed[0]  # an item of the one list alternative: name the item
        raise _Bad(path, tp, value)
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise _Bad(path, tp, value)
        return value
    kind = origin or base
    if kind is float and isinstance(value, str) and _as_float(value) is not None:
        value = _as_float(value)  # YAML 1.1's string "1e-3": the number it spells (see the docstring)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is Any:
        ok = True
    else:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok or not all(check.holds(value) for check in checks):
        raise _Bad(path, tp, value)
    if kind is list and args:
        value = [_check(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    return value


@functools.cache
def fields_of(config_cls: type) -> dict[str, Any]:
    """A typed config's fields: name -> annotation (string annotations resolved, Annotated kept)."""
    hints = typing.get_type_hints(config_cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls) if f.init}


def make_config(config_cls: type, overrides: dict[str, Any], where: str,
                check: Callable[[Any, str], None] | None = None, key_where: dict[str, str] | None = None):
    """``config_cls(**overrides)``, every key and value checked against the field declarations first.

    ``where`` is the key path of ``overrides``; ``key_where`` gives another path for some keys (those a
    variant set itself). ``check(cfg, where)`` is the owner's hook for rules between fields; it raises
    ``ConfigError("<where>.<key>: ...")``, as do a source options' ``__post_init__`` with ``options.<key>``:
    either is reworded to the key's full path.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     threshold: float = 0.5
    ...     steps: int = 10
    >>> make_config(C, {"steps": 3}, "methods.toy.params")
    C(threshold=0.5, steps=3)
    >>> make_config(C, {"stpes": 3}, "methods.toy.params")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: methods.toy.params: unknown key 'stpes' (did you mean 'steps'? known:
    threshold, steps)
    >>> make_config(C, {"steps": "many"}, "methods.toy.params", key_where={"steps": "methods.toy.variants.v.params"})
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: methods.toy.variants.v.params.steps: expected an integer, got 'many'
    """
    key_where = key_where or {}
    declared = fields_of(config_cls)
    values = {}
    for key, value in overrides.items():
        prefix = key_where.get(key, where)
        if key not in declared:
            close = difflib.get_close_matches(str(key), declared, n=1)
            guess = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{prefix}: unknown key '{key}' ({guess}known: {', '.join(declared)})")
        values[key] = check_value(value, declared[key], f"{prefix}.{key}")
    try:
        cfg = config_cls(**values)
        if check is not None:
            check(cfg, where)
    except ConfigError as exc:
        raise _reworded(exc, where, key_where) from None
    return cfg


def _reworded(exc: ConfigError, where: str, key_where: dict[str, str]) -> ConfigError:
    """A hook's or ``__post_init__``'s error, its key path made the full one."""
    text = str(exc)
    for prefix in dict.fromkeys((where, "options")):
        if text.startswith((prefix + ".", prefix + ":")):
            rest = text[len(prefix):]
            key = re.match(r"\.(\w+)", rest)
            return ConfigError(key_where.get(key.group(1), where) + rest if key else where + rest)
    return exc


# ----------------------------------------------------------------------------------------------- the workflow


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


def _schema_message(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if "propertyNames" in error.relative_schema_path:  # a dataset, method or variant name
        return f"config: {where}.{error.instance}: not a usable name: {error.schema['description']}"
    if error.validator == "uniqueItems":
        twice = sorted({repr(v) for v in error.instance if error.instance.count(v) > 1})
        return f"config: {where}: {', '.join(twice)} listed more than once in {error.instance}; list each once"
    if error.validator == "additionalProperties":
        return f"config: {where}: {error.message} (known: {', '.join(error.schema.get('properties', {}))})"
    return f"config: {where}: {error.message}"


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Check ``config`` whole and fill its defaults in place; returns it. Every error names the key.

    >>> validate_config({"datasets": {"d": {"source": "synthetic"}},
    ...                  "methods": {"watershed": {}}})["datasets"]["d"]["split"]["fractions"]
    [0.6, 0.2, 0.2]
    >>> validate_config({"datasets": {"d": {"source": "synthetic", "n_images": 3}},
    ...                  "methods": {"watershed": {}}})  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: config: datasets.d: Additional properties are not allowed ('n_images' was
    unexpected) (known: source, options, paper_dataset, split)
    >>> validate_config({"datasets": {"d": {"source": "synthetic", "options": {"n_imags": 3}}},
    ...                  "methods": {"watershed": {}}})  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: datasets.d.options: unknown key 'n_imags' (did you mean 'n_images'? known:
    generator, n_images, image_size, seed, params)
    >>> validate_config({"datasets": {"d": {"source": "synthetic"}},
    ...                  "methods": {"watershed": {"variants": {"v": {"params": {"tune_on": "all"}}}}}})
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    objguided.errors.ConfigError: methods.watershed.variants.v.params.tune_on: expected one of val, train, both,
    got 'all'
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        raise ConfigError(_schema_message(errors[0]))
    _fill_defaults(config, schema)
    from objguided.data.sources import source_options

    for name, dataset in config["datasets"].items():
        fractions = dataset["split"]["fractions"]
        if abs(sum(fractions) - 1) > 1e-6:
            raise ConfigError(f"datasets.{name}.split.fractions: {fractions} sum to {sum(fractions):g}; give "
                              "train, val and test fractions that sum to 1")
        source_options(dataset["source"], dataset["options"], f"datasets.{name}.options")
    for name, method in config["methods"].items():
        unknown = [d for d in method.get("datasets", []) if d not in config["datasets"]]
        if unknown:
            raise ConfigError(f"methods.{name}.datasets: '{unknown[0]}' is not a dataset of this config "
                              f"(configured: {', '.join(config['datasets'])})")
    check_params(config)
    return config


def check_params(config: dict) -> None:
    """Build every (method, variant)'s config as its job will (``Method.make_config``), so that a bad value
    stops the plan, named at the variant's ``params`` when the variant set it, else at the method's."""
    import objguided_methods as methods

    for name, spec in config["methods"].items():
        try:
            method = methods.get(name)
        except ConfigError as exc:
            raise ConfigError(f"methods.{name}: {exc}") from None
        for variant, vspec, params in variants_of(spec):
            own = vspec.get("params", {})
            method.make_config(params, where=f"methods.{name}.params",
                               key_where=dict.fromkeys(own, f"methods.{name}.variants.{variant}.params"))


def variants_of(method_spec: dict) -> Iterator[tuple[str, dict, dict]]:
    """A configured method's (variant, its spec, its params: the method's shared params, the variant's own on top).

    >>> list(variants_of({"params": {"lr": 1, "k": 2}, "variants": {"v": {"params": {"k": 3}}}}))
    [('v', {'params': {'k': 3}}, {'lr': 1, 'k': 3})]
    """
    for variant, vspec in method_spec.get("variants", {"default": {}}).items():
        yield variant, vspec, {**method_spec.get("params", {}), **vspec.get("params", {})}


def configfiles_on_command_line(argv: list[str]) -> list[str]:
    """Every value of every ``--configfile`` (or ``--configfiles``, or an abbreviation) of a snakemake command
    line. Snakemake merges the values of one flag (``--configfile a.yaml b.yaml``) and keeps only the last of a
    repeated flag (``--configfile a.yaml --configfile b.yaml`` runs b.yaml alone, without a word), so the
    workflow reads the command line itself to refuse both.

    >>> configfiles_on_command_line(["snakemake", "-n", "--configfile", "a.yaml", "--configfile=b.yaml"])
    ['a.yaml', 'b.yaml']
    >>> configfiles_on_command_line(["snakemake", "--configfiles", "a.yaml", "b.yaml", "-n", "--cores", "2"])
    ['a.yaml', 'b.yaml']
    """
    files, taking = [], False
    for arg in argv[1:]:
        flag, eq, value = arg.partition("=")
        if flag.startswith("--configf") and "--configfiles".startswith(flag):
            files += [value] if eq else []
            taking = not eq
        elif taking and not arg.startswith("-"):
            files.append(arg)
        else:
            taking = False
    return files


def load_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from exc
    return validate_config(config)


def runs(config: dict) -> list[dict]:
    """Every (dataset, method, variant, seed) the config asks for, with its label and paper row."""
    out = []
    for dataset, dspec in config["datasets"].items():
        for method, mspec in config["methods"].items():
            if "datasets" in mspec and dataset not in mspec["datasets"]:
                continue
            for variant, vspec, params in variants_of(mspec):
                label = vspec.get("label") or (method if variant == "default" else f"{method}/{variant}")
                for seed in config["seeds"]:
                    out.append({"dataset": dataset, "method": method, "variant": variant, "seed": seed,
                                "params": params, "label": label,
                                "paper_dataset": dspec.get("paper_dataset"),
                                "paper_method": vspec.get("paper_method", method if variant == "default" else None),
                                "evaluation": {**config["evaluation"], **vspec.get("evaluation", {})}})
    return out
