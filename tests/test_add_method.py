"""Adding a method exactly as methods/README.md says: drop a module into methods/, name it in the config."""

import json
import re
from pathlib import Path

import pytest

import objguided_methods as methods
from objguided.cli import main
from objguided.config import runs, validate_config

README = Path(methods.__file__).with_name("README.md")


@pytest.fixture
def toy_method_dir(tmp_path, monkeypatch):
    """methods/threshold.py, written from the README's example into an extra folder of the methods package."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    folder = tmp_path / "more_methods"
    folder.mkdir()
    (folder / "threshold.py").write_text("\n".join(line[3:] if line.startswith("   ") else line
                                                   for line in code.splitlines()))
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(folder)])
    yield folder
    methods._REGISTRY.pop("threshold", None)
    import sys
    sys.modules.pop("objguided_methods.threshold", None)


def test_readme_method_joins_the_registry_config_and_every_step(toy_method_dir, tmp_path):
    assert "threshold" in methods.available()

    yaml_block = re.search(r"```yaml\n(.*?)```", README.read_text(), re.S).group(1)
    import yaml

    config = validate_config({"datasets": {"tiny": {"source": "synthetic",
                                                    "options": {"n_images": 10, "image_size": 64}}},
                              **yaml.safe_load(yaml_block)})
    planned = runs(config)
    assert [(r["method"], r["variant"], r["label"]) for r in planned] == [
        ("threshold", "default", "threshold"), ("threshold", "dark", "threshold (inverted)")]
    assert planned[1]["params"] == {"min_size": 20, "invert": True}

    data = tmp_path / "data"
    assert main(["convert", "--spec", json.dumps(config["datasets"]["tiny"]), "--out", str(data)]) == 0
    assert main(["split", "--data", str(data), "--out", str(data / "split.json")]) == 0
    ap50 = {}
    for run_spec in planned:
        run = tmp_path / run_spec["variant"]
        assert main(["train", "--method", "threshold", "--params", json.dumps(run_spec["params"]),
                     "--data", str(data), "--split", str(data / "split.json"), "--out", str(run / "model.pt")]) == 0
        assert main(["predict", "--model", str(run / "model.pt"), "--data", str(data),
                     "--out", str(run / "predictions.json")]) == 0
        assert main(["score", "--gt", str(data), "--split", str(data / "split.json"), "--subset", "test",
                     "--pred", str(run / "predictions.json"), "--out", str(run / "metrics.json")]) == 0
        ap50[run_spec["variant"]] = json.loads((run / "metrics.json").read_text())["ap_seg_50"]
    # synthetic nuclei are bright on dark or dark on light: one of the two variants finds most of them
    assert max(ap50.values()) > 0.3, ap50
