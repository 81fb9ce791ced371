"""Bad input stops `snakemake -n`, before any job, naming the key path and the fix; the one checker behind it.

Each plan case runs the real Snakemake on a copy of config/test.yaml (or config/demo.yaml) in a temporary
folder. Before these checks every case here planned without a word and failed minutes later in a job, or
never (a method whose ``datasets`` named no configured dataset silently left the report).
"""

import copy
import subprocess
import sys
import textwrap
import typing

import pytest
import yaml

import objguided_methods as methods
from objguided.config import (
    Len,
    PosFloat,
    PosInt,
    Range,
    check_value,
    configfiles_on_command_line,
    fields_of,
    load_config,
    make_config,
    runs,
)
from objguided.errors import ConfigError

OBJGUIDED = {"params": {"backbone": "resnet18", "pretrained": None, "input_size": 64, "max_steps": 2},
             "variants": {"refine": {}, "norefine": {"params": {"refine": False}}}}


@pytest.fixture(scope="module")
def base(repo):
    config = yaml.safe_load((repo / "config" / "test.yaml").read_text())
    config["methods"]["objguided"] = copy.deepcopy(OBJGUIDED)
    return config


def plan(snakemake_cmd, repo, workdir, *configfiles, args=None):
    """``snakemake -n`` of the repository's workflow in ``workdir`` with these config files (one --configfile);
    (exit status, stdout + stderr): a dry run prints its errors on stdout."""
    args = args or ["--configfile", *map(str, configfiles)]
    result = subprocess.run(snakemake_cmd + ["-n", "--cores", "1", "-s", str(repo / "Snakefile"), "--directory",
                                             str(workdir), *args], cwd=workdir, capture_output=True, text=True,
                            timeout=300)
    return result.returncode, result.stdout + result.stderr


def write(tmp_path, config, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _set(config, path, value):
    *keys, last = path.split("/")
    for key in keys:
        config = config.setdefault(key, {})
    config[last] = value


def _rename(config, path, new):
    *keys, old = path.split("/")
    for key in keys:
        config = config[key]
    config[new] = config.pop(old)


# case id -> (change to the base config, what stderr must say: the key path and the fix)
CASES = {
    "method-params-typo": (lambda c: _set(c, "methods/objguided/params/max_stpes", 5),
                           ["methods.objguided.params: unknown key 'max_stpes' (did you mean 'max_steps'? known: "]),
    "variant-params-typo": (lambda c: _set(c, "methods/objguided/variants/refine/params/refnie", False),
                            ["methods.objguided.variants.refine.params: unknown key 'refnie' (did you mean 'refine'?"]),
    "allowed-values": (lambda c: _set(c, "methods/objguided/params/faithful_to", "papper"),
                       ["methods.objguided.params.faithful_to: expected one of paper, code, got 'papper'"]),
    "optional-range-in-variant": (lambda c: _set(c, "methods/objguided/variants/refine/params/max_steps", 0),
                                  ["methods.objguided.variants.refine.params.max_steps: expected an integer >= 1 or "
                                   "null, got 0"]),
    "negative-lr": (lambda c: _set(c, "methods/objguided/params/lr", -1),
                    ["methods.objguided.params.lr: expected a number > 0, got -1"]),
    "cross-field-hook-in-variant": (
        lambda c: (_set(c, "methods/objguided/params/k", 1.0), _set(c, "methods/objguided/variants/norefine/params/"
                                                                       "beta", 2.0)),
        ["methods.objguided.variants.norefine.params.beta: expected 0 < beta <= k (= 1.0), got 2.0"]),
    "baseline-variant": (lambda c: _set(c, "methods/watershed/variants/default/params", {"tune_on": "test"}),
                         ["methods.watershed.variants.default.params.tune_on: expected one of val, train, both, "
                          "got 'test'"]),
    "dataset-name-space": (lambda c: _rename(c, "datasets/tiny-plant", "tiny plant"),
                           ["datasets.tiny plant: not a usable name: use only letters, digits, '_', '.' and '-'"]),
    "dataset-name-slash": (lambda c: _rename(c, "datasets/tiny-plant", "tiny/plant"),
                           ["datasets.tiny/plant: not a usable name: use only letters, digits, '_', '.' and '-'"]),
    "variant-name-slash": (lambda c: _rename(c, "methods/objguided/variants/norefine", "no/refine"),
                           ["methods.objguided.variants.no/refine: not a usable name: use only letters"]),
    "duplicate-seeds": (lambda c: _set(c, "seeds", [0, 0]),
                        ["config: seeds: 0 listed more than once in [0, 0]; list each once"]),
    "unknown-dataset-of-method": (lambda c: _set(c, "methods/watershed/datasets", ["tiny-nucleii"]),
                                  ["methods.watershed.datasets: 'tiny-nucleii' is not a dataset of this config "
                                   "(configured: tiny-nuclei, tiny-plant)"]),
    "negative-count": (lambda c: _set(c, "datasets/tiny-nuclei/options/n_images", -1),
                       ["datasets.tiny-nuclei.options.n_images: expected an integer >= 1, got -1"]),
    "source-own-check": (lambda c: _set(c, "datasets/tiny-nuclei/options/generator", "cells"),
                         ["datasets.tiny-nuclei.options.generator: 'cells' is not one of nuclei, plant, neural"]),
    "fractions-sum": (lambda c: _set(c, "datasets/tiny-plant/split", {"fractions": [0.5, 0.3, 0.3]}),
                      ["datasets.tiny-plant.split.fractions: [0.5, 0.3, 0.3] sum to 1.1; give train, val and test "
                       "fractions that sum to 1"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_stops_the_plan_naming_the_key_and_the_fix(case, base, snakemake_cmd, repo, tmp_path):
    change, messages = CASES[case]
    config = copy.deepcopy(base)
    change(config)
    status, out = plan(snakemake_cmd, repo, tmp_path, write(tmp_path, config))
    assert status != 0, out[-3000:]
    for message in messages:
        assert message in out, out[-3000:]
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_demo_config_with_a_params_typo_stops_the_plan(snakemake_cmd, repo, tmp_path):
    config = yaml.safe_load((repo / "config" / "demo.yaml").read_text())
    config["methods"]["dcan"]["params"]["max_stpes"] = 5
    status, out = plan(snakemake_cmd, repo, tmp_path, write(tmp_path, config, "demo.yaml"))
    assert status != 0 and "methods.dcan.params: unknown key 'max_stpes' (did you mean 'max_steps'?" in out, out


@pytest.mark.parametrize("form", ["--configfile a --configfile b", "--configfile a b"])
def test_more_than_one_config_file_is_refused(form, base, snakemake_cmd, repo, tmp_path):
    a, b = write(tmp_path, base, "a.yaml"), write(tmp_path, base, "b.yaml")
    status, out = plan(snakemake_cmd, repo, tmp_path, args=[{"a": str(a), "b": str(b)}.get(arg, arg)
                                                            for arg in form.split()])
    assert status != 0 and f"2 config files given ({a}, {b}): pass exactly one --configfile" in out, out[-3000:]


def test_yaml_exponent_strings_are_floats_where_a_float_is_declared(base, snakemake_cmd, repo, tmp_path):
    config = copy.deepcopy(base)
    config["methods"]["objguided"]["params"]["lr"] = "LR"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False).replace("lr: LR", "lr: 1e-3"))
    assert load_config(path)["methods"]["objguided"]["params"]["lr"] == "1e-3"  # YAML 1.1: a string
    status, out = plan(snakemake_cmd, repo, tmp_path, path)
    assert status == 0, out[-3000:]
    for run in runs(load_config(path)):
        if run["method"] == "objguided":  # the job builds its config from these params
            assert methods.get("objguided").make_config(run["params"]).lr == 0.001


# ------------------------------------------------------------------------------------------------ the checker


@pytest.mark.parametrize("annotation, value, message", [
    (PosInt | None, 0, "x: expected an integer >= 1 or null, got 0"),
    (PosInt, True, "x: expected an integer >= 1, got True"),  # YAML's true is not 1
    (PosInt, 2.0, "x: expected an integer >= 1, got 2.0"),
    (PosInt, "1e3", "x: expected an integer >= 1, got '1e3' (text, not a number: YAML 1.1 reads 1e3 and anything "
                    "quoted as a string; write a plain whole number such as 1000)"),
    (PosFloat, "fast", "x: expected a number > 0, got 'fast'"),
    (PosFloat, float("nan"), "x: expected a number > 0, got nan"),
    (float, "inf", "x: expected a number, got 'inf'"),
    (typing.Literal["paper", "code"], "papper", "x: expected one of paper, code, got 'papper'"),
    (typing.Literal[1, 2], True, "x: expected one of 1, 2, got True"),
    (typing.Annotated[list[PosFloat], Len(1)], [], "x: expected a non-empty list (each item a number > 0), got []"),
    (list[PosFloat], [1, -2], "x[1]: expected a number > 0, got -2"),
    (list[PosFloat] | None, [1, -2], "x[1]: expected a number > 0, got -2"),
    (list[PosFloat], 0.5, "x: expected a list (each item a number > 0), got 0.5"),
    (typing.Annotated[list[int], Len(2, 2)], [1], "x: expected a list of 2 items (each item an integer), got [1]"),
    (typing.Annotated[int, Range(min=32, multiple_of=32)], 48,
     "x: expected an integer >= 32 and a multiple of 32, got 48"),
    (typing.Annotated[float, Range(gt=0, max=1)], 0, "x: expected a number in (0, 1], got 0"),
    (typing.Annotated[float, Range(min=0, lt=1)], 1, "x: expected a number in [0, 1), got 1"),
    (typing.Annotated[str, Len(1)] | None, "", "x: expected a non-empty string or null, got ''"),
    (bool, "yes", "x: expected true or false, got 'yes'"),
])
def test_checker_refuses_naming_the_path_and_what_is_expected(annotation, value, message):
    with pytest.raises(ConfigError) as err:
        check_value(value, annotation, "x")
    assert str(err.value) == message


@pytest.mark.parametrize("annotation, value, expected", [
    (PosFloat, "1e-3", 0.001),  # YAML 1.1 reads 1e-3 as a string: taken as the float it spells
    (PosFloat | None, "2E+2", 200.0),
    (PosFloat, 3, 3),  # an integer is a number
    (PosInt | None, None, None),
    (list[PosFloat], ["1e-1", 2], [0.1, 2]),
    (typing.Literal["paper", "code"], "code", "code"),
])
def test_checker_accepts(annotation, value, expected):
    assert check_value(value, annotation, "x") == expected


def test_hook_and_post_init_errors_are_named_at_the_key_that_set_them():
    from dataclasses import dataclass

    @dataclass
    class C:
        k: PosFloat = 3.0
        beta: PosFloat = 0.75

        def __post_init__(self):
            if self.k == 7:
                raise ConfigError("options.k: 7 is unlucky")

    def hook(cfg, where):
        if cfg.beta > cfg.k:
            raise ConfigError(f"{where}.beta: expected 0 < beta <= k (= {cfg.k}), got {cfg.beta!r}")

    variant = "methods.m.variants.v.params"
    with pytest.raises(ConfigError, match=r"^methods\.m\.variants\.v\.params\.beta: expected 0 < beta <= k"):
        make_config(C, {"k": 1.0, "beta": 2.0}, "methods.m.params", hook, key_where={"beta": variant})
    with pytest.raises(ConfigError, match=r"^methods\.m\.params\.beta: expected 0 < beta <= k"):
        make_config(C, {"k": 1.0, "beta": 2.0}, "methods.m.params", hook, key_where={"k": variant})
    with pytest.raises(ConfigError, match=r"^datasets\.d\.options\.k: 7 is unlucky$"):
        make_config(C, {"k": 7}, "datasets.d.options")


def test_every_method_declares_each_field_and_its_defaults_hold():
    for name in methods.available():
        method = methods.get(name)
        declared = fields_of(method.Config)
        cfg = method.make_config({})
        for key, annotation in declared.items():
            for part in [annotation, *typing.get_args(annotation)]:  # a list declares its items
                assert part not in (list, dict, typing.Any), f"{name}.{key}: {annotation} leaves its items unchecked"
            assert check_value(getattr(cfg, key), annotation, f"{name}.{key}") == getattr(cfg, key)


def test_dense_optimizer_choices_are_the_trainers():
    from objguided.engine import trainer
    from objguided_methods._dense import DenseTrainFields

    assert typing.get_args(fields_of(DenseTrainFields)["optimizer"]) == trainer.OPTIMIZERS


def test_peer_configs_are_checked_without_their_packages(tmp_path):
    code = textwrap.dedent("""
        import sys
        for name in ("cellpose", "stardist", "tensorflow", "csbdeep"):
            sys.modules[name] = None  # importing them fails, as where the peers extra is not installed
        from objguided.config import validate_config
        from objguided.errors import ConfigError
        config = {"datasets": {"d": {"source": "synthetic"}},
                  "methods": {"cellpose": {"params": {"bsize": 100}}, "stardist": {}}}
        try:
            validate_config(config)
        except ConfigError as exc:
            print(exc)
        config["methods"]["cellpose"]["params"] = {}
        config["methods"]["stardist"]["params"] = {"grid": 3}
        try:
            validate_config(config)
        except ConfigError as exc:
            print(exc)
        import objguided_methods as methods
        print(methods.get("cellpose").unavailable() is not None)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "methods.cellpose.params.bsize: expected an integer >= 32 and a multiple of 8, got 100",
        "methods.stardist.params.grid: expected a power of 2, got 3", "True"]


def test_schema_name_patterns_are_the_workflows_wildcard_constraints(repo):
    import re

    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]
    smk = (repo / "workflow" / "rules" / "common.smk").read_text()
    constraint = {k: v for k, v in re.findall(r'^\s+(\w+)="([^"]+)",$', smk, re.M)}
    assert schema["datasets"]["propertyNames"]["pattern"] == f"^{constraint['dataset']}$"
    assert schema["methods"]["propertyNames"]["pattern"] == f"^{constraint['method']}$"
    variants = schema["methods"]["additionalProperties"]["properties"]["variants"]
    assert variants["propertyNames"]["pattern"] == f"^{constraint['variant']}$"


def test_configfiles_on_the_command_line_every_form():
    assert configfiles_on_command_line(["snakemake", "--configfile", "a", "--configfile", "b", "-n"]) == ["a", "b"]
    assert configfiles_on_command_line(["snakemake", "--configfiles", "a", "b", "--cores", "1"]) == ["a", "b"]
    assert configfiles_on_command_line(["snakemake", "--configfile=a", "--config", "x=1"]) == ["a"]
    assert configfiles_on_command_line(["snakemake", "--configfi", "a", "-n"]) == ["a"]  # argparse abbreviation
    assert configfiles_on_command_line(["snakemake", "-n", "--cores", "2"]) == []
