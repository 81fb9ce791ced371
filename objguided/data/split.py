"""Train / val / test splits: seeded from fractions, or read from published id lists."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from objguided.data.canonical import SUBSETS
from objguided.errors import ConfigError, DataError


def seeded_split(ids: Sequence[str], fractions: Sequence[float], seed: int) -> dict:
    """Shuffle ``ids`` with ``seed`` and cut them by ``fractions`` (train, val, test).

    Sizes are rounded for train and val; test takes the rest, so nothing is lost.

    >>> s = seeded_split([f"img{i}" for i in range(10)], [0.6, 0.2, 0.2], seed=0)
    >>> [len(s[k]) for k in ("train", "val", "test")], s["source"], s["seed"]
    ([6, 2, 2], 'seeded', 0)
    >>> s == seeded_split([f"img{i}" for i in range(10)], [0.6, 0.2, 0.2], seed=0)
    True
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"split.fractions: {list(fractions)} must be three non-negative numbers summing to 1")
    order = sorted(ids)
    np.random.default_rng(seed).shuffle(order)
    n_train = int(round(fractions[0] * len(order)))
    n_val = int(round(fractions[1] * len(order)))
    if len(order) >= 3 and min(n_train, n_val, len(order) - n_train - n_val) == 0:
        raise ConfigError(f"split: {len(order)} images cut by {list(fractions)} leave a subset empty; "
                          "make more images or change the fractions")
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train:n_train + n_val]),
        "test": sorted(order[n_train + n_val:]),
        "source": "seeded",
        "seed": seed,
    }


def split_from_files(folder: str | Path, ids: Sequence[str]) -> dict:
    """A published split: ``train.txt``, ``val.txt``, ``test.txt`` in ``folder``, one id per line.

    Every listed id must be one of ``ids`` (the converted dataset's); a line may carry a file suffix.
    """
    folder = Path(folder)
    known = set(ids)
    split: dict = {"source": "paper", "seed": None}
    for subset in SUBSETS:
        path = folder / f"{subset}.txt"
        if not path.is_file():
            raise DataError(f"{path}: split list not found")
        listed = [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]
        missing = [i for i in listed if i not in known]
        if missing:
            raise DataError(f"{path}: {len(missing)} ids are not in the converted dataset (first: '{missing[0]}')")
        split[subset] = listed
    return split
