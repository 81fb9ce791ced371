"""The synthetic sets the configs use stay the same data for the same seed.

config/test.yaml and config/demo.yaml generate their data with :func:`objguided.data.synthetic.generate`;
the test suite's expectations and the demo's numbers assume that a seed gives the same images and label maps
after any change to the generators' code. ``tests/golden/synthetic_sha256.json`` holds the sha256 of every
image and label map of those sets as the generators made them (numpy, scipy and scikit-image at the pins of
requirements.txt); a refactor must reproduce them byte for byte. To record new ones after an intended
change of the data: ``python tests/test_synthetic_golden.py --record`` (and say why in the commit).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from objguided.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "synthetic_sha256.json"
CONFIGS = ("config/test.yaml", "config/demo.yaml")


def case_key(options: dict) -> str:
    """The generator, size, seed and parameters of a synthetic set (its image count aside)."""
    return json.dumps({"generator": options.get("generator", "nuclei"), "image_size": options.get("image_size", 128),
                       "seed": options.get("seed", 0), "params": options.get("params", {})}, sort_keys=True)


def config_sets() -> dict[str, tuple[str, int]]:
    """``{config file:dataset: (case key, n_images)}`` of every synthetic set of the configs."""
    out = {}
    for name in CONFIGS:
        datasets = yaml.safe_load((ROOT / name).read_text())["datasets"]
        for ds, spec in datasets.items():
            if spec.get("source") == "synthetic":
                options = spec.get("options", {})
                out[f"{name}:{ds}"] = (case_key(options), options.get("n_images", 30))
    return out


def digests(key: str, n: int) -> list[str]:
    case = json.loads(key)
    out = []
    for image_id, image, labels in generate(case["generator"], n, case["image_size"], case["seed"], **case["params"]):
        h = hashlib.sha256(image_id.encode())
        for a in (image, labels):
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        out.append(h.hexdigest())
    return out


@pytest.mark.parametrize("where", sorted(config_sets()))
def test_config_sets_are_the_recorded_bytes(where):
    key, n = config_sets()[where]
    golden = json.loads(GOLDEN.read_text())
    assert key in golden, (f"{where}: no recorded digests for {key}; if this set is new, record them: "
                           f"python tests/test_synthetic_golden.py --record")
    assert len(golden[key]) >= n, f"{where}: {n} images, {len(golden[key])} recorded; record again (--record)"
    # image k depends only on (seed, kind, k): the first n recorded digests are this set's
    assert digests(key, n) == golden[key][:n], f"{where}: the generator no longer makes the recorded images"


def record() -> None:
    cases: dict[str, int] = {}
    for key, n in config_sets().values():
        cases[key] = max(n, cases.get(key, 0))
    GOLDEN.write_text(json.dumps({k: digests(k, n) for k, n in sorted(cases.items())}, indent=1) + "\n")
    print(f"{GOLDEN}: {len(cases)} sets, {sum(cases.values())} images")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    record()
