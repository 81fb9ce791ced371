"""What produced a result: code version, configuration, seed, packages and device."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("objguided", "numpy", "torch", "torchvision", "scikit-image", "pycocotools", "snakemake")


def config_hash(spec: Any) -> str:
    """A short, stable hash of a JSON-able configuration.

    >>> config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
    True
    """
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def git_commit(repo: Path | None = None) -> str | None:
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def split_record(split_path: str | Path) -> dict:
    """The sha256 and subset sizes of a split file, kept with every model trained on it: a seeded split is
    recomputed on each run, so this is what shows that two runs saw the same train/val/test images."""
    path = Path(split_path)
    blob = path.read_bytes()
    subsets = json.loads(blob)
    return {"path": str(path), "sha256": hashlib.sha256(blob).hexdigest(),
            "sizes": {k: len(v) for k, v in subsets.items() if isinstance(v, list)}}


def describe_device(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()})"


def provenance(spec: Any = None, seed: int | None = None, device: str | None = None,
               split_path: str | Path | None = None) -> dict:
    # torch's CUDA build where this process uses torch; steps that never do (score, report) skip its import
    torch = sys.modules.get("torch")
    return {
        "split": split_record(split_path) if split_path is not None else None,
        "git_commit": git_commit(),
        "config_hash": config_hash(spec) if spec is not None else None,
        "seed": seed,
        "device": describe_device(device) if device else None,
        "cuda": torch.version.cuda if torch is not None else None,
        "packages": package_versions(),
        "host": platform.node(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
