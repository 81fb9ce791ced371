"""config/demo-seeds.yaml is config/demo.yaml with two seeds: nothing else may drift between them, and both pass
the schema the workflow checks before any job."""

from __future__ import annotations

from pathlib import Path

import yaml

from objguided.config import validate_config

CONFIG = Path(__file__).resolve().parents[1] / "config"


def test_demo_seeds_is_the_demo_with_two_seeds():
    demo = yaml.safe_load((CONFIG / "demo.yaml").read_text())
    seeds = yaml.safe_load((CONFIG / "demo-seeds.yaml").read_text())
    assert demo["seeds"] == [0] and seeds["seeds"] == [0, 1]
    assert {k: v for k, v in demo.items() if k != "seeds"} == {k: v for k, v in seeds.items() if k != "seeds"}
    for config in (demo, seeds):
        validate_config(config)
