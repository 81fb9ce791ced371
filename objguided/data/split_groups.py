"""Leakage-free splits: every image of one group (e.g. all frames of one tracked plant) in one subset.

The paper's plant split puts frames of the same tracked plant in train, val and test alike, so a model is
tested on near-copies of its training images. :func:`grouped_split` cuts by groups instead, aiming at the
image fractions; :func:`plant_group` is the grouping for the plant data. :data:`GROUP_RULES` names the
groupings a config can ask for (``split: {kind: grouped, group_by: plant}``).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from objguided.data.canonical import SUBSETS
from objguided.errors import ConfigError

_TRACKED = re.compile(r"(?P<plant>.+_plant\d+)_frame\d+")


def plant_group(image_id: str) -> str:
    """The plant an image shows: a tracking frame's tracked plant; a "Plant" subset image is its own group.

    >>> plant_group("ara2012_plant01_frame07"), plant_group("ara2013_plant123")
    ('ara2012_plant01', 'ara2013_plant123')

    The archive's names do not link "Plant" subset images to the tracked plants (both come from the same
    trays), so leakage between those two subsets cannot be ruled out from the names alone.
    """
    m = _TRACKED.fullmatch(image_id)
    return m.group("plant") if m else image_id


def sequence_group(image_id: str) -> str:
    """The time-lapse sequence of a Cell Tracking Challenge frame id ('01_t013' -> '01').

    >>> sequence_group("02_t013")
    '02'
    """
    return image_id.split("_", 1)[0]


#: groupings a config can name
GROUP_RULES: dict[str, Callable[[str], str]] = {"plant": plant_group, "sequence": sequence_group,
                                                "none": lambda image_id: image_id}


def group_rule(name: str) -> Callable[[str], str]:
    if name not in GROUP_RULES:
        raise ConfigError(f"split.group_by: '{name}' is not one of {', '.join(GROUP_RULES)}")
    return GROUP_RULES[name]


def grouped_split(ids: Sequence[str], group_of: Callable[[str], str], fractions: Sequence[float],
                  seed: int) -> dict:
    """Split ``ids`` so that no group is in two subsets, the subsets' image counts near ``fractions``.

    Groups are shuffled with ``seed`` (after sorting, so the result depends on the ids and the seed only),
    then taken largest first, each into the subset furthest below its share of the images; ties go to the
    earlier subset (train, val, test). Every subset gets at least one group when there are three or more.

    >>> ids = [f"p{p}_f{f}" for p in range(6) for f in range(3)] + [f"single{i}" for i in range(6)]
    >>> s = grouped_split(ids, lambda i: i.split("_")[0], [0.5, 0.25, 0.25], seed=0)
    >>> [len(s[k]) for k in ("train", "val", "test")], s["source"], s["seed"]
    ([12, 6, 6], 'grouped', 0)
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"split.fractions: {list(fractions)} must be three non-negative numbers summing to 1")
    groups: dict[str, list[str]] = {}
    for image_id in sorted(set(ids)):
        groups.setdefault(str(group_of(image_id)), []).append(image_id)
    if len(groups) < 3:
        raise ConfigError(f"split: {len(ids)} images fall into {len(groups)} group(s); a grouped split needs at "
                          "least three groups (one per subset)")
    names = sorted(groups)
    np.random.default_rng(seed).shuffle(names)
    order = sorted(names, key=lambda g: -len(groups[g]))  # stable: equal sizes keep the shuffled order
    targets = [f * len(ids) for f in fractions]
    counts = [0, 0, 0]
    members: list[list[str]] = [[], [], []]
    wanted = [k for k in range(3) if fractions[k] > 0]
    for index, name in enumerate(order):
        left = len(order) - index
        empty = [k for k in wanted if not members[k]]
        if empty and left <= len(empty):
            k = empty[0]  # the last groups go to subsets still empty
        else:
            k = max(wanted, key=lambda j: (targets[j] - counts[j]) / max(targets[j], 1e-9) if targets[j] else -1)
        members[k].append(name)
        counts[k] += len(groups[name])
    split: dict = {subset: sorted(i for g in members[k] for i in groups[g]) for k, subset in enumerate(SUBSETS)}
    split.update({"source": "grouped", "seed": seed,
                  "groups": {subset: sorted(members[k]) for k, subset in enumerate(SUBSETS)}})
    return split
