"""Conversions of the real archives' layouts, on miniatures with the real names, folders and compression
(tests/data/ctc/*.zip, tests/data/lsc/CVPPP2017_LSC_training.zip, rebuilt by the make_*_mini.py beside
them; tests/data/dsb2018_mini.zip holds real DSB2018 members): LZW TIFFs and the other compressions
tifffile reads, partial gold truth with its TRA markers, a set name that does not match the archive, LSC
subset counts, the DSB2018 set recorded, and the COCO export read by pycocotools and faster-coco-eval."""

from __future__ import annotations

import io
import json
import logging
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import yaml

from objguided.cli import main as cli
from objguided.data.canonical import read_image, read_label_map, to_uint8
from objguided.data.convert import convert
from objguided.data.sources.dsb2018 import MIRROR_SHA256, OFFICIAL_URL, STAGE1_TRAIN_IMAGES, which_set
from objguided.data.sources.lsc import SUBSET_IMAGES
from objguided.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
HELA = DATA / "ctc" / "Fluo-N2DL-HeLa.zip"
PSC = DATA / "ctc" / "PhC-C2DL-PSC.zip"
LSC = DATA / "lsc" / "CVPPP2017_LSC_training.zip"
DSB_MINI = DATA / "dsb2018_mini.zip"
DSB_MIRROR = REPO.parent / "shared" / "data" / "dsb2018" / "stage1_train.zip"


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}


def tif(data: bytes) -> np.ndarray:
    return tifffile.imread(io.BytesIO(data))


def ctc(archive, name="Fluo-N2DL-HeLa", **options) -> dict:
    return {"source": "ctc", "options": {"name": name, "archive": str(archive), **options}}


def truth_as_predictions(data: Path, ids: list[str], path: Path, score: float) -> Path:
    """A converted dataset's label maps written as a run's predictions (a perfect method)."""
    from objguided.metrics.coco import encode_instances, write_predictions

    records = []
    for image_id in ids:
        labels = read_label_map(data / "labels" / f"{image_id}.png")
        records += encode_instances(image_id, [SimpleNamespace(mask=labels == k, score=score, soft_area=None)
                                               for k in np.unique(labels)[1:]])
    write_predictions(path, records)
    return path


def extract(archive: Path, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    return dest


# ---------------------------------------------------------------------------------------------- CTC


def test_the_miniatures_are_compressed_like_the_real_archives():
    for archive in (HELA, PSC):
        files = members(archive)
        tiffs = [n for n in files if n.endswith(".tif")]
        assert len(tiffs) == 2 * (4 + 4 + 4) + 4  # frames, silver, markers per sequence; 2 gold frames each
        for name in tiffs:
            with tifffile.TiffFile(io.BytesIO(files[name])) as t:
                assert t.pages[0].compression.name == "LZW", name
        with zipfile.ZipFile(archive) as zf:
            assert {i.compress_type for i in zf.infolist() if not i.is_dir()} == {zipfile.ZIP_DEFLATED}
    assert tif(members(HELA)["Fluo-N2DL-HeLa/01/t000.tif"]).dtype == np.uint16
    assert tif(members(PSC)["PhC-C2DL-PSC/01/t000.tif"]).dtype == np.uint8


@pytest.mark.parametrize("truth, ids", [
    ("silver", ["01_t000", "01_t001", "01_t002", "01_t003", "02_t000", "02_t001", "02_t002", "02_t003"]),
    ("gold", ["01_t001", "01_t003", "02_t001", "02_t003"]),
    ("both", ["01_t000", "01_t001", "01_t002", "01_t003", "02_t000", "02_t001", "02_t002", "02_t003"]),
])
def test_ctc_hela_zip_partial_gold_truth_and_markers(tmp_path, caplog, truth, ids):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="objguided.convert"):
        manifest = convert(ctc(HELA, truth=truth), out)
    files = members(HELA)
    assert manifest["ids"] == ids and manifest["images"] == len(ids)
    assert manifest["objects"] == sum(len(np.unique(read_label_map(out / "labels" / f"{i}.png"))) - 1 for i in ids)
    gold = {i for i in ids if i.endswith(("t001", "t003"))} if truth != "silver" else set()
    assert {i for i, k in manifest["truth_of"].items() if k == "gold"} == gold
    # gold frame 1 annotates all five cells, frame 3 leaves two out (make_ctc_mini.py); silver is complete
    partial = {i for i in gold if i.endswith("t003")}
    assert manifest["truth_complete"] == {i: i not in partial for i in ids}
    assert manifest["partial_truth"]["missing_objects"] == {i: 2 for i in partial}
    assert manifest["partial_truth"]["images"] == len(partial) and manifest["partial_truth"]["unverified"] == []
    assert manifest["markers"] == {i: f"markers/{i}.png" for i in ids}
    for image_id in ids:
        seq, t = image_id.split("_")
        markers = read_label_map(out / manifest["markers"][image_id])
        assert np.array_equal(markers, tif(files[f"Fluo-N2DL-HeLa/{seq}_GT/TRA/man_track{t[1:]}.tif"]))
        tag = "GT" if image_id in gold else "ST"
        labels = read_label_map(out / "labels" / f"{image_id}.png")
        assert np.array_equal(labels, tif(files[f"Fluo-N2DL-HeLa/{seq}_{tag}/SEG/man_seg{t[1:]}.tif"]))
        raw = tif(files[f"Fluo-N2DL-HeLa/{seq}/{t}.tif"])
        assert np.array_equal(read_image(out / "images" / f"{image_id}.png"), to_uint8(raw))
    over = manifest["gold_over_silver"]
    warned = [r.getMessage() for r in caplog.records if "truth 'both'" in r.getMessage()]
    if truth == "both":
        assert over == {"images": 4, "partial": ["01_t003", "02_t003"]}
        assert len(warned) == 1 and "2 of them annotate only some cells (01_t003, 02_t003)" in warned[0]
    else:
        assert over == {"images": 0, "partial": []} and not warned
        assert ("2 images have partial truth" in caplog.text) == (truth == "gold")


def test_ctc_psc_extracted_folder_both_truths_8bit(tmp_path):
    root = extract(PSC, tmp_path / "downloads")
    for archive in (root, root / "PhC-C2DL-PSC"):  # the folder holding the set, or the set's own folder
        out = tmp_path / f"out-{archive.name}"
        manifest = convert(ctc(archive, "PhC-C2DL-PSC", truth="both"), out)
        assert manifest["images"] == 8 and manifest["truth_counts"] == {"gold": 4, "silver": 4}
        assert manifest["partial_truth"]["missing_objects"] == {i: 1 for i in ("01_t001", "01_t003", "02_t001",
                                                                                 "02_t003")}
        assert manifest["gold_over_silver"]["partial"] == ["01_t001", "01_t003", "02_t001", "02_t003"]
        raw = tif(members(PSC)["PhC-C2DL-PSC/02/t002.tif"])
        assert np.array_equal(read_image(out / "images" / "02_t002.png"), raw)  # 8-bit frames kept as they are


def test_ctc_gold_without_markers_is_not_taken_for_complete(tmp_path):
    root = extract(HELA, tmp_path / "x")
    shutil.rmtree(root / "Fluo-N2DL-HeLa" / "02_GT" / "TRA")
    manifest = convert(ctc(root, truth="gold"), tmp_path / "out")
    assert manifest["partial_truth"]["unverified"] == ["02_t001", "02_t003"]
    assert manifest["truth_complete"] == {"01_t001": True, "01_t003": False, "02_t001": False, "02_t003": False}
    assert set(manifest["markers"]) == {"01_t001", "01_t003"}
    assert sorted(p.stem for p in (tmp_path / "out" / "markers").glob("*.png")) == ["01_t001", "01_t003"]


def test_ctc_name_that_does_not_match_the_archive_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"options.name is 'PhC-C2DL-PSC' but .*Fluo-N2DL-HeLa\.zip .*holds the "
                                          r"Cell Tracking Challenge set 'Fluo-N2DL-HeLa'.*Set options.name: "
                                          r"Fluo-N2DL-HeLa .*or point options.archive .*at PhC-C2DL-PSC.zip"):
        convert(ctc(HELA, "PhC-C2DL-PSC"), tmp_path / "out")
    own = extract(HELA, tmp_path / "x") / "Fluo-N2DL-HeLa"  # the set's own folder: its name is what is checked
    with pytest.raises(ConfigError, match=r"options.name is 'PhC-C2DL-PSC' but options.archive '.*/Fluo-N2DL-HeLa'"):
        convert(ctc(own, "PhC-C2DL-PSC"), tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert convert(ctc(own), tmp_path / "out")["images"] == 8
    mine = own.rename(tmp_path / "x" / "my-copy")  # a folder name that names no set: nothing contradicts
    assert convert(ctc(mine, "PhC-C2DL-PSC"), tmp_path / "out2")["images"] == 8


COMPRESSIONS = [  # (tifffile compression, keyword arguments): every lossless codec tifffile reads and writes
    ("lzw", {}), ("lzw", {"predictor": True}), ("zlib", {}), ("deflate", {}), ("packbits", {}), ("zstd", {}),
    ("lzma", {}), ("jpeg", {"compressionargs": {"lossless": True}}), ("png", {}), ("jpeg2000", {}),
]


@pytest.mark.parametrize("compression, kwargs", COMPRESSIONS, ids=[f"{c}{'+' + next(iter(k)) if k else ''}"
                                                                 for c, k in COMPRESSIONS])
def test_ctc_reads_every_lossless_tiff_compression(tmp_path, compression, kwargs):
    files = {}
    for name, data in members(HELA).items():
        if name.startswith("Fluo-N2DL-HeLa/01") and name.endswith(".tif"):
            buf = io.BytesIO()
            tifffile.imwrite(buf, tif(data), compression=compression, **kwargs)
            files[name] = buf.getvalue()
    root = tmp_path / "ctc"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    with tifffile.TiffFile(io.BytesIO(files["Fluo-N2DL-HeLa/01/t000.tif"])) as t:
        assert t.pages[0].compression.name != "NONE"
    out = tmp_path / "out"
    manifest = convert(ctc(root, truth="both", sequences=["01"]), out)
    assert manifest["images"] == 4 and manifest["partial_truth"]["missing_objects"] == {"01_t003": 2}
    original = members(HELA)
    for t in range(4):
        raw = tif(original[f"Fluo-N2DL-HeLa/01/t{t:03d}.tif"])
        assert np.array_equal(read_image(out / "images" / f"01_t{t:03d}.png"), to_uint8(raw))
        assert np.array_equal(read_label_map(out / "markers" / f"01_t{t:03d}.png"),
                              tif(original[f"Fluo-N2DL-HeLa/01_GT/TRA/man_track{t:03d}.tif"]))


@pytest.fixture
def no_imagecodecs(monkeypatch):
    """tifffile as it is without the imagecodecs package: its codec lookup fails to import the codecs."""
    from tifffile import tifffile as tf

    monkeypatch.setattr(tf, "imagecodecs", None)
    monkeypatch.setattr(tf.TIFF.DECOMPRESSORS, "_codecs", {1: tf.identityfunc})


def test_a_missing_imagecodecs_is_named_with_the_command_that_installs_it(tmp_path, no_imagecodecs):
    with pytest.raises(DataError, match=r"Fluo-N2DL-HeLa\.zip:Fluo-N2DL-HeLa/01/t000\.tif: its compression needs the "
                                        r"'imagecodecs' package.*LZW.*`pip install imagecodecs`") as err:
        convert(ctc(HELA), tmp_path / "out")
    assert "re-download" not in str(err.value)  # the file is fine: downloading it again would not help
    single = tmp_path / "t000.tif"
    single.write_bytes(members(HELA)["Fluo-N2DL-HeLa/01/t000.tif"])
    with pytest.raises(DataError, match=r"t000\.tif: its compression needs the 'imagecodecs' package"):
        read_image(single)  # the canonical reader (user folders of TIFFs) says the same


# ---------------------------------------------------------------------------------------------- LSC


def test_lsc_training_zip_counts_each_subset_against_the_card(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="objguided.convert"):
        manifest = convert({"source": "lsc", "options": {"archive": str(LSC)}}, tmp_path / "out")
    assert manifest["subsets"] == {"A1": 3, "A2": 2, "A3": 2, "A4": 3} and manifest["images"] == 10
    assert manifest["ids"][:3] == ["A1_plant001", "A1_plant002", "A1_plant004"]
    assert manifest["subsets_short"] == {s: {"images": n, "expected": SUBSET_IMAGES[s]}
                                         for s, n in manifest["subsets"].items()}
    warned = [r.getMessage() for r in caplog.records if "CVPPP 2017 LSC" in r.getMessage()]
    assert len(warned) == 1 and "A1: 3 of 128, A2: 2 of 31, A3: 2 of 27, A4: 3 of 624" in warned[0]
    labels = read_label_map(tmp_path / "out" / "labels" / "A2_plant003.png")
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]  # plant003: three leaves, palette indices 1..3

    caplog.clear()
    root = extract(LSC, tmp_path / "x")
    shutil.rmtree(root / "CVPPP2017_LSC_training" / "training" / "A3")
    with caplog.at_level(logging.WARNING, logger="objguided.convert"):
        manifest = convert({"source": "lsc", "options": {"archive": str(root), "subsets": ["A2", "A3"]}},
                           tmp_path / "out2")
    assert manifest["subsets"] == {"A2": 2} and manifest["subsets_short"]["A3"] == {"images": 0, "expected": 27}
    assert "A2: 2 of 31, A3: 0 of 27" in caplog.text


def test_lsc_archive_pointing_at_a_subset_folder_names_its_parent(tmp_path):
    training = extract(LSC, tmp_path / "x") / "CVPPP2017_LSC_training" / "training"
    with pytest.raises(DataError, match=rf"options.archive '{training}/A1' .*one subset's folder \(A1/\).*Point "
                                        rf"options.archive at its parent, '{training}'"):
        convert({"source": "lsc", "options": {"archive": str(training / "A1")}}, tmp_path / "out")
    assert convert({"source": "lsc", "options": {"archive": str(training)}}, tmp_path / "out")["images"] == 10


def test_lsc_card_states_the_subset_counts_the_source_checks():
    card = yaml.safe_load((REPO / "datasets" / "lsc.yaml").read_text())
    assert card["converter"]["expect"]["subsets"] == SUBSET_IMAGES
    assert card["converter"]["expect"]["images"] == sum(SUBSET_IMAGES.values())
    entry = yaml.safe_load(card["config_entry"])["lsc"]
    assert entry["source"] == "lsc" and entry["paper_dataset"] == "lsc"


def test_table4_appears_for_an_lsc_set_without_paper_dataset(tmp_path):
    """The LSC miniature converted, its truth scored as a perfect prediction, and the run record given no
    paper_dataset: Table IV has the subset rows and the mean."""
    from objguided.metrics.quality import quality_from_predictions
    from objguided.report.table34 import write_tables34

    data = tmp_path / "lsc"
    manifest = convert({"source": "lsc", "options": {"archive": str(LSC)}}, data)
    q = quality_from_predictions(data, truth_as_predictions(data, manifest["ids"], tmp_path / "p.json", 1.0))
    run = {"dataset": "lsc", "method": "watershed", "variant": "default", "seed": 0, "label": "watershed",
           "paper_dataset": None, "paper_method": None, "metrics": {"quality": q}, "speed": None}
    written = write_tables34([run], tmp_path / "report", REPO / "paper")
    assert [p.name for p in written] == ["table4.csv", "table4.md"]
    import pandas as pd

    t4 = pd.read_csv(tmp_path / "report" / "table4.csv").set_index("paper_dataset")
    assert t4.loc[["A1", "A2", "A3", "A4", "mean"], "has_run"].all() and not t4.loc["A5", "has_run"]
    assert t4.loc["A1", "best_dice"] == 1.0 and t4.loc["mean", "images"] == 10
    ctc_like = {**run, "metrics": {"quality": {**q, "groups": {"01": q["groups"]["A1"]}}}}
    assert write_tables34([ctc_like], tmp_path / "r2", REPO / "paper") == []  # other id groups: no Table IV


# ---------------------------------------------------------------------------------------------- DSB2018


def test_dsb2018_manifest_records_which_set_it_converted(tmp_path):
    for name, expected in (("mine.zip", "user"), ("stage1_train.zip", "user"), ("stage2_test_final.zip", "stage2")):
        raw = tmp_path / f"raw-{name}"
        raw.mkdir()
        shutil.copy(DSB_MINI, raw / name)
        manifest = convert({"source": "dsb2018", "options": {"url": f"file:///any/{name}", "size": 0}},
                           tmp_path / f"out-{name}", raw)
        assert manifest["set"] == expected and manifest["images"] == 3
    assert "holds 3 images, not stage1_train's 670" in manifest_of(tmp_path / "out-stage1_train.zip")["set_note"]


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_dsb2018_from_the_official_url_must_have_its_670_images(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(DSB_MINI, raw / "stage1_train.zip")
    with pytest.raises(DataError, match=r"stage1_train\.zip: 3 images, but the official stage1_train\.zip that "
                                        r"options\.url names holds 670 \(datasets/dsb2018\.yaml expect\.images\).*"
                                        r"Delete it \(and stage1_train\.zip\.sha256\.lock\)"):
        convert({"source": "dsb2018", "options": {"url": OFFICIAL_URL, "size": 0}}, tmp_path / "out", raw)
    assert not (tmp_path / "out" / "manifest.json").exists()
    card = yaml.safe_load((REPO / "datasets" / "dsb2018.yaml").read_text())
    assert card["converter"]["expect"]["images"] == STAGE1_TRAIN_IMAGES


@pytest.mark.skipif(not DSB_MIRROR.is_file(), reason="the ../shared/data mirror of stage1_train.zip is not here")
def test_the_real_stage1_train_is_recognised_by_its_hash_and_count():
    with zipfile.ZipFile(DSB_MIRROR) as zf:
        images = {n.split("/")[0] for n in zf.namelist() if "/images/" in n}
    assert len(images) == STAGE1_TRAIN_IMAGES
    assert which_set(DSB_MIRROR, MIRROR_SHA256, len(images)) == {"set": "stage1_train", "expected_images": 670}
    renamed = DSB_MIRROR.with_name("copy.zip")  # the hash vouches, whatever the file is called
    assert which_set(renamed, MIRROR_SHA256, len(images))["set"] == "stage1_train"


# ---------------------------------------------------------------------------------------------- COCO


def test_export_coco_round_trip_through_pycocotools_and_faster_coco_eval(tmp_path, capsys):
    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = tmp_path / "psc"
    manifest = convert(ctc(PSC, "PhC-C2DL-PSC"), data)
    predictions = truth_as_predictions(data, manifest["ids"], tmp_path / "predictions.json", 0.9)
    gt, pred = tmp_path / "gt.json", tmp_path / "gt_results.json"
    assert cli(["export-coco", "--data", str(data), "--out", str(gt),
                "--pred", str(tmp_path / "predictions.json")]) == 0
    coco = json.loads(gt.read_text())
    assert [img["id"] for img in coco["images"]] == list(range(1, 9))
    assert [Path(img["file_name"]).stem for img in coco["images"]] == manifest["ids"]
    assert all(isinstance(a["image_id"], int) for a in coco["annotations"])
    assert len(coco["annotations"]) == manifest["objects"] == len(json.loads(pred.read_text()))

    for COCOClass, Eval in ((COCO, COCOeval), (FastCOCO, COCOeval_faster)):
        truth = COCOClass(str(gt))
        for iou in ("segm", "bbox"):
            ev = Eval(truth, truth.loadRes(str(pred)), iou)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[0] == pytest.approx(1.0), (COCOClass.__module__, iou)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**json.loads(predictions.read_text())[0], "image_id": "nuclei_0001"}]))
    assert cli(["export-coco", "--data", str(data), "--out", str(tmp_path / "g2.json"), "--pred", str(bad)]) == 2
    assert "record 0: image_id 'nuclei_0001' is not an image of the exported ground truth" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- README


@pytest.mark.parametrize("doc", ["README.md", "datasets/README.md"])
def test_snakemake_examples_put_targets_before_configfile(doc):
    """`--configfile` takes every following word as a config file: nothing but options may follow its file."""
    lines = [line.split("#")[0].split() for line in (REPO / doc).read_text().splitlines()]
    commands = [words for words in lines if words and words[0].endswith("snakemake") and "--configfile" in words]
    for words in commands:
        after = words[words.index("--configfile") + 2:]
        assert not after or after[0].startswith("-"), " ".join(words)
    assert doc != "README.md" or len(commands) >= 5
