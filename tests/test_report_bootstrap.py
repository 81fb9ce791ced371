"""Bootstrap intervals over test images: the per-prediction match data of metrics.json, resampling, Table I."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from objguided.data.canonical import write_sample
from objguided.errors import DataError
from objguided.metrics import ap
from objguided.metrics.coco import encode_instances, write_predictions
from objguided.metrics.score import score_predictions
from objguided.report import bootstrap as bs
from objguided.report.table1 import BOOTSTRAP, build_table1, read_table1, table1_markdown, write_table1

SIZE = 40


def make_data(root: Path, n_images: int = 8, seed: int = 0) -> tuple[Path, list[str]]:
    """A canonical dataset of ``n_images`` gray images with 2-5 square objects each; all ids in 'test'."""
    rng = np.random.default_rng(seed)
    ids = [f"img{k:02d}" for k in range(n_images)]
    for image_id in ids:
        labels = np.zeros((SIZE, SIZE), np.int32)
        for obj in range(int(rng.integers(2, 6))):
            y, x = (int(v) for v in rng.integers(0, SIZE - 8, size=2))
            labels[y:y + 7, x:x + 7] = obj + 1
        image = (60 + 150 * (labels > 0) + rng.integers(0, 30, labels.shape)).astype(np.uint8)
        write_sample(root, image_id, image, labels)
    (root / "split.json").write_text(json.dumps({"train": [], "val": [], "test": ids}))
    return root, ids


def make_predictions(root: Path, ids: list[str], path: Path, seed: int, ties: bool = False) -> Path:
    """Noisy predictions: per GT object a shifted copy (score in [0.3, 1)), plus a few false positives.
    With ``ties`` the scores take three values only, so the pooled ranking leans on the tie order."""
    from objguided.data.canonical import read_label_map

    rng = np.random.default_rng(seed)
    records = []
    for image_id in ids:
        labels = read_label_map(root / "labels" / f"{image_id}.png")
        inst = []
        for obj in np.unique(labels)[1:]:
            if rng.random() < 0.15:
                continue  # a missed object
            mask = np.roll(labels == obj, tuple(int(v) for v in rng.integers(-2, 3, size=2)), axis=(0, 1))
            inst.append(SimpleNamespace(mask=mask, score=float(rng.uniform(0.3, 1.0)), soft_area=None))
        for _ in range(int(rng.integers(0, 3))):
            mask = np.zeros((SIZE, SIZE), bool)
            y, x = (int(v) for v in rng.integers(0, SIZE - 5, size=2))
            mask[y:y + 5, x:x + 5] = True
            inst.append(SimpleNamespace(mask=mask, score=float(rng.uniform(0.0, 0.9)), soft_area=None))
        if ties:
            for i in inst:
                i.score = float(rng.choice([0.25, 0.5, 0.75]))
        records += encode_instances(image_id, inst)
    write_predictions(path, records)
    return path


def scored(tmp_path: Path, seeds=(0,), ties: bool = False, n_images: int = 8) -> list[dict]:
    root, ids = make_data(tmp_path / "data", n_images)
    out = []
    for s in seeds:
        pred = make_predictions(root, ids, tmp_path / f"pred{s}.json", seed=100 + s, ties=ties)
        out.append(score_predictions(root, pred, split_path=root / "split.json", subset="test", extras=False))
    return out


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    return scored(tmp_path_factory.mktemp("boot"), seeds=(0, 1))


def test_metrics_hold_match_data(two_seeds):
    m = two_seeds[0]
    assert "per_image_match" in m["evaluator"]
    for r in m["per_image"]:
        assert len(r["pred_scores"]) == len(r["pred_tp_seg"]) == len(r["pred_tp_dec"]) == r["predictions"]
        # the bit masks add up to the per-image TP counts at each threshold
        flags = bs.unpack_bits(r["pred_tp_seg"], 10)
        assert flags.sum(axis=1).tolist() == r["tp_seg"]
        assert bs.unpack_bits(r["pred_tp_dec"], 10).sum(axis=1).tolist() == r["tp_dec"]


@pytest.mark.parametrize("ties", [False, True])
def test_identity_resample_reproduces_stored_ap(tmp_path, ties):
    (m,) = scored(tmp_path, ties=ties)
    matches = bs.matches_of(m)
    everyone = np.arange(len(matches.image_ids))
    ranked = bs.rank_matches(matches)
    for c in ("seg", "dec"):
        stored = np.array(m[f"ap_{c}"])
        assert stored.max() > 0
        assert np.abs(bs.pooled_ap(matches, everyone, c) - stored).max() < 1e-12
        assert np.abs(bs.resample_ap(ranked, np.ones(everyone.size, np.int64), c) - stored).max() < 1e-12
        # the image order of a resample does not matter: a permutation draws every image once as well
        perm = np.random.default_rng(3).permutation(everyone)
        assert np.abs(bs.pooled_ap(matches, perm, c) - stored).max() < 1e-12


def test_fast_resample_equals_reference_pooling(tmp_path):
    (m,) = scored(tmp_path, ties=True)
    matches = bs.matches_of(m)
    ranked = bs.rank_matches(matches)
    counts = bs.draws(len(matches.image_ids), 30, seed=5)
    for row in counts:
        idx = np.repeat(np.arange(row.size), row)
        for c in ("seg", "dec"):
            np.testing.assert_allclose(bs.resample_ap(ranked, row, c), bs.pooled_ap(matches, idx, c), atol=1e-12)


def test_duplicated_images_pool_like_a_bigger_test_set(tmp_path):
    """Drawing every image twice doubles TP, FP and GT alike: precision and recall, hence AP, are unchanged."""
    (m,) = scored(tmp_path)
    matches = bs.matches_of(m)
    twice = np.repeat(np.arange(len(matches.image_ids)), 2)
    np.testing.assert_allclose(bs.pooled_ap(matches, twice, "seg"), m["ap_seg"], atol=1e-12)


def test_interval_contains_point_estimate_and_is_deterministic(two_seeds):
    m = two_seeds[0]
    a = bs.intervals([bs.matches_of(m)], resamples=300, seed=7)
    b = bs.intervals([bs.matches_of(m)], resamples=300, seed=7)
    c = bs.intervals([bs.matches_of(m)], resamples=300, seed=8)
    assert a == b and a != c
    point = {"ap_seg": m["ap_seg_mean"], "ap_dec": m["ap_dec_mean"], "ap_seg_50": m["ap_seg_50"],
             "ap_seg_75": m["ap_seg_75"]}
    for name, (lo, hi) in a.items():
        assert lo <= 100 * point[name] <= hi, name
        assert 0 <= lo < hi <= 100, name


def test_two_seeds_are_paired(two_seeds):
    """Both seeds see the same image draws; the statistic is their per-resample mean."""
    ms = [bs.matches_of(m) for m in two_seeds]
    counts = bs.draws(len(ms[0].image_ids), 50, seed=0)
    both = bs.resampled_statistics(ms, counts)["ap_seg"]
    one = [bs.resampled_statistics([m], counts)["ap_seg"] for m in ms]
    np.testing.assert_allclose(both, (one[0] + one[1]) / 2, atol=1e-12)
    # the identity resample gives the mean of the stored values
    ident = bs.resampled_statistics(ms, np.ones((1, len(ms[0].image_ids)), np.int64))["ap_seg"]
    assert ident[0] == pytest.approx(100 * np.mean([m["ap_seg_mean"] for m in two_seeds]), abs=1e-10)
    # different test images cannot be paired
    other = ms[1]._replace(image_ids=["x"] * len(ms[1].image_ids))
    with pytest.raises(DataError, match="different test images"):
        bs.resampled_statistics([ms[0], other], counts)


def test_draws_are_uniform_counts():
    c = bs.draws(4, 2000, seed=0)
    assert c.shape == (2000, 4) and (c.sum(axis=1) == 4).all()
    assert abs(c.mean() - 1.0) < 0.05


def test_corrupt_match_data_is_named(two_seeds):
    m = json.loads(json.dumps(two_seeds[0]))
    m["per_image"][0]["pred_tp_seg"] = m["per_image"][0]["pred_tp_seg"][:-1] if m["per_image"][0]["pred_tp_seg"] \
        else [1]
    with pytest.raises(DataError, match="re-run the score step"):
        bs.matches_of(m)


def _run(m, seed, label="ours"):
    return {"dataset": "toy", "method": "objguided", "variant": "refine", "seed": seed, "label": label,
            "paper_dataset": None, "paper_method": None, "metrics": m, "speed": None}


def test_table1_intervals(two_seeds, tmp_path):
    runs = [_run(m, s) for s, m in enumerate(two_seeds)]
    df = build_table1(runs, None)
    row = df.iloc[0]
    assert row.n_seeds == 2 and row.ci_images == 8
    for v in ("ap_seg", "ap_dec", "ap_seg_50", "ap_seg_75"):
        assert row[f"{v}_ci_low"] <= row[v] <= row[f"{v}_ci_high"], v
    expected = bs.intervals([bs.matches_of(m) for m in two_seeds], BOOTSTRAP["resamples"], BOOTSTRAP["seed"])
    assert row.ap_seg_ci_low == round(expected["ap_seg"][0], 2)
    text = table1_markdown(df)
    assert f"[{row.ap_seg_ci_low:.2f}, {row.ap_seg_ci_high:.2f}]" in text
    assert "95% percentile bootstrap interval over the test images (1000 resamples" in text
    assert "No interval" not in text
    write_table1(df, tmp_path / "t.csv", tmp_path / "t.md", html_path=tmp_path / "t.html")
    assert read_table1(tmp_path / "t.csv").ap_seg_ci_high.iloc[0] == row.ap_seg_ci_high
    assert "95% CI [" in (tmp_path / "t.html").read_text()
    # no bootstrap asked for: no intervals
    assert build_table1(runs, None, bootstrap=None).ap_seg_ci_low.isna().all()


def test_table1_without_match_data_says_so(two_seeds, tmp_path):
    """A metrics.json from before the match data (no pred_* keys) still builds; the row has no interval."""
    old = json.loads(json.dumps(two_seeds[0]))
    for r in old["per_image"]:
        for key in ("pred_scores", "pred_tp_seg", "pred_tp_dec"):
            del r[key]
    assert bs.matches_of(old) is None
    runs = [_run(two_seeds[0], 0, "new"), _run(old, 0, "old") | {"variant": "norefine"}]
    df = build_table1(runs, None).set_index("label")
    assert df.loc["old"].ci_images == 0 and math.isnan(df.loc["old"].ap_seg_ci_low)
    assert df.loc["new"].ci_images == 8 and not math.isnan(df.loc["new"].ap_seg_ci_low)
    text = table1_markdown(df.reset_index())
    assert "No interval for toy/old: their metrics.json holds no per-prediction match data" in text
    # one seed without the data: the row gets no interval at all (never a partial one)
    mixed = build_table1([_run(two_seeds[0], 0), _run(old, 1)], None)
    assert mixed.ci_images.iloc[0] == 0 and "No interval for any row" in table1_markdown(mixed)
    # a Table I CSV written before the intervals existed still reads back
    legacy = df.reset_index().drop(columns=[c for c in df.columns if "_ci_" in c] + ["ci_images"])
    legacy.to_csv(tmp_path / "legacy.csv", index=False)
    back = read_table1(tmp_path / "legacy.csv")
    assert back.ap_seg_ci_low.isna().all() and (back.ci_images == 0).all()


def test_voc_ap_reference_agrees_with_ap_module(two_seeds):
    """pooled_ap is ap.py's pooling: the same TP flags ranked with ap.pooled_rank and scored with ap.voc_ap."""
    m = two_seeds[1]
    matches = bs.matches_of(m)
    rank = ap.pooled_rank(matches.scores)
    assert ap.voc_ap(matches.tp["seg"][:, rank], int(matches.gt_kept.sum())).tolist() == m["ap_seg"]
