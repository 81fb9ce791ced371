"""User-supplied data sources (plant, lsc, neural, ctc) on miniature archives built here with the real
folder layout and naming: tiny synthetic images, paletted label PNGs, 16-bit TIFFs. No real data."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from objguided.config import validate_config
from objguided.data.canonical import CanonicalDataset, read_image, read_label_map, to_uint8
from objguided.data.convert import convert, fetch
from objguided.data.sources import unavailable_reason
from objguided.data.sources.plant import paper_ids
from objguided.data.split import split_from_files
from objguided.data.split_groups import grouped_split, plant_group, sequence_group
from objguided.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
PPD = "Plant_Phenotyping_Datasets"
RED, GREEN, GRAY = (200, 30, 30), (30, 200, 30), (128, 128, 128)


# ---------------------------------------------------------------------------------------------- builders


def png_bytes(array, mode=None, palette=None) -> bytes:
    im = Image.fromarray(np.asarray(array), mode) if mode else Image.fromarray(np.asarray(array))
    if palette is not None:
        flat = [0, 0, 0] + [c for colour in palette for c in colour]
        im.putpalette(flat + [0] * (768 - len(flat)))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def tif_bytes(array) -> bytes:
    """LZW-compressed, as every TIFF of the Cell Tracking Challenge's archives."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(array), compression="lzw")
    return buf.getvalue()


def leaf_label(h=8, w=10, gray_leaf=False, indices=(1, 3)) -> bytes:
    """A paletted label PNG: palette index 1 (red) and 3 (green, or gray when gray_leaf) are leaves."""
    idx = np.zeros((h, w), np.uint8)
    idx[1:4, 1:5] = indices[0]
    idx[4:7, 5:9] = indices[1]
    palette = [RED, (0, 0, 255), GRAY if gray_leaf else GREEN]
    return png_bytes(idx, "P", palette)


def rgb_image(h=8, w=10, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    return png_bytes(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def write_tree(root: Path, files: dict) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_zip(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def plant_member(image_id: str) -> str:
    """Where the real archive keeps an image id of the paper's split (rgb member)."""
    year = image_id[3:7]
    collection = "Ara2012" if year == "2012" else "Ara2013-Canon"
    subset = "Tracking" if "_frame" in image_id else "Plant"
    return f"{PPD}/{subset}/{collection}/{image_id}_rgb.png"


def plant_files(ids, gray_every=0, size=(8, 10)) -> dict:
    files = {}
    image, plain = rgb_image(*size), leaf_label(*size)
    gray = leaf_label(*size, gray_leaf=True)
    for k, image_id in enumerate(ids):
        rgb = plant_member(image_id)
        files[rgb] = image
        files[rgb.replace("_rgb.png", "_label.png")] = gray if gray_every and k % gray_every == 0 else plain
        files[rgb.replace("_rgb.png", "_fg.png")] = png_bytes(np.zeros(size, np.uint8))
    return files


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def split_names() -> set:
    return {Path(line.strip()).stem for subset in ("train", "val", "test")
            for line in (REPO / "datasets" / "plant" / "split" / f"{subset}.txt").read_text().splitlines()
            if line.strip()}


# ---------------------------------------------------------------------------------------------- plant


def test_paper_selection_rule_gives_exactly_the_published_split_names():
    ids = paper_ids()
    assert len(ids) == len(set(ids)) == 473
    assert set(ids) == split_names()
    for subset, n in (("train", 284), ("val", 95), ("test", 94)):
        lines = (REPO / "datasets" / "plant" / "split" / f"{subset}.txt").read_text().split()
        assert len(lines) == n
        shared = REPO.parent / "shared" / "splits" / "plant" / f"{subset}.txt"  # the committed copy is exact
        if shared.is_file():
            assert (REPO / "datasets" / "plant" / "split" / f"{subset}.txt").read_bytes() == shared.read_bytes()


def test_plant_paper_selection_on_a_full_size_miniature_zip(tmp_path):
    files = plant_files(paper_ids(), gray_every=50, size=(6, 7))
    extra = {  # what the paper does not use: other collections, trays, an extra frame, a README
        f"{PPD}/Plant/Ara2013-RPi/ara2013_plant001_rgb.png": rgb_image(6, 7),
        f"{PPD}/Plant/Ara2013-RPi/ara2013_plant001_label.png": leaf_label(6, 7),
        f"{PPD}/Plant/Tobacco/tobacco_plant001_rgb.png": rgb_image(6, 7),
        f"{PPD}/Tray/Ara2012/ara2012_tray01_rgb.png": rgb_image(6, 7),
        f"{PPD}/Tracking/Ara2013-Canon/ara2013_plant01_frame18_rgb.png": rgb_image(6, 7),
        f"{PPD}/Tracking/Ara2013-Canon/ara2013_plant01_frame18_label.png": leaf_label(6, 7),
        f"{PPD}/README.txt": b"readme",
    }
    archive = write_zip(tmp_path / "Plant_Phenotyping_Datasets.zip", {**files, **extra})
    out = tmp_path / "out"
    manifest = convert({"source": "plant", "options": {"archive": str(archive)}}, out)

    assert manifest["images"] == 473 and set(manifest["ids"]) == split_names()
    assert manifest["subsets"] == {"plant_ara2012": 120, "plant_ara2013": 165, "tracking_ara2012": 52,
                                   "tracking_ara2013": 136}
    assert manifest["objects"] == 2 * 473
    assert manifest["label_encoding"] == {"palette": 473}
    n_gray = len(range(0, 473, 50))
    assert manifest["code_rule"]["dropped_leaves"] == n_gray and manifest["code_rule"]["images_affected"] == n_gray
    assert manifest["skipped"]["not_in_selection"] == 1
    assert manifest["skipped"]["ignored_collections"] == {"Plant/Ara2013-RPi": 1, "Plant/Tobacco": 1}
    assert manifest["archive"]["sha256"] and manifest["archive"]["size"] == archive.stat().st_size
    assert json.loads((out / "manifest.json").read_text())["images"] == 473

    labels = read_label_map(out / "labels" / "ara2012_plant001.png")
    assert sorted(np.unique(labels)) == [0, 1, 3]  # palette indices kept as the instance ids
    assert read_image(out / "images" / "ara2013_plant08_frame17.png").shape == (6, 7, 3)
    split = split_from_files(REPO / "datasets" / "plant" / "split", CanonicalDataset(out).ids)
    assert [len(split[k]) for k in ("train", "val", "test")] == [284, 95, 94]


def test_plant_palette_ids_and_gray_leaf_code_rule_count(tmp_path):
    ids = ["ara2012_plant001", "ara2013_plant002", "ara2012_plant01_frame01"]
    files = plant_files(ids)
    files[plant_member("ara2013_plant002").replace("_rgb", "_label")] = leaf_label(gray_leaf=True, indices=(2, 7))
    root = write_tree(tmp_path / "extracted", files)
    manifest = convert({"source": "plant", "options": {"archive": str(root), "selection": "all"}}, tmp_path / "out")
    assert manifest["ids"] == sorted(ids)
    assert manifest["code_rule"]["dropped_leaves"] == 1
    assert manifest["code_rule"]["per_image"] == {"ara2013_plant002": 1}
    labels = read_label_map(tmp_path / "out" / "labels" / "ara2013_plant002.png")
    assert sorted(np.unique(labels)) == [0, 2, 7]
    assert (labels == 7).sum() == 12  # the gray leaf is a leaf here


def test_plant_rgb_label_images_map_each_colour_to_an_id(tmp_path):
    colours = np.zeros((8, 10, 3), np.uint8)
    colours[0:3, 0:3] = RED
    colours[4:8, 4:8] = GRAY
    colours[0:2, 7:10] = GREEN
    files = plant_files(["ara2012_plant005"])
    files[plant_member("ara2012_plant005").replace("_rgb", "_label")] = png_bytes(colours)
    root = write_tree(tmp_path / "raw", files)
    manifest = convert({"source": "plant", "options": {"archive": str(root), "selection": "all"}}, tmp_path / "out")
    assert manifest["label_encoding"] == {"rgb": 1} and manifest["objects"] == 3
    assert manifest["code_rule"]["dropped_leaves"] == 1
    labels = read_label_map(tmp_path / "out" / "labels" / "ara2012_plant005.png")
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]
    assert len(np.unique(labels[4:8, 4:8])) == 1 and labels[5, 5] > 0


def test_tracking_frames_in_per_plant_folders_and_a_custom_pattern(tmp_path):
    files = {
        f"{PPD}/Tracking/Ara2012/plant02/ara2012_plant02_frame03_rgb.png": rgb_image(),
        f"{PPD}/Tracking/Ara2012/plant02/ara2012_plant02_frame03_label.png": leaf_label(),
        f"{PPD}/Plant/Ara2012/ara2012_plant001_rgb.png": rgb_image(),
        f"{PPD}/Plant/Ara2012/ara2012_plant001_label.png": leaf_label(),
    }
    root = write_tree(tmp_path / "a", files)
    manifest = convert({"source": "plant", "options": {"archive": str(root), "selection": "all"}}, tmp_path / "o1")
    assert manifest["ids"] == ["ara2012_plant001", "ara2012_plant02_frame03"]

    other = {f"{PPD}/Tracking/Ara2013-Canon/P4/t009_rgb.png": rgb_image(),
             f"{PPD}/Tracking/Ara2013-Canon/P4/t009_label.png": leaf_label()}
    root = write_tree(tmp_path / "b", other)
    options = {"archive": str(root), "selection": "all",
               "tracking_pattern": r"P(?P<plant>\d+)/t(?P<frame>\d+)_rgb\.png$"}
    manifest = convert({"source": "plant", "options": options}, tmp_path / "o2")
    assert manifest["ids"] == ["ara2013_plant04_frame09"]


def test_plant_paper_selection_names_the_missing_images(tmp_path):
    ids = paper_ids()[:-3]
    archive = write_zip(tmp_path / "p.zip", plant_files(ids, size=(4, 4)))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"3 of the paper's 473 images are missing \(first: ara2013_plant163"):
        convert({"source": "plant", "options": {"archive": str(archive)}}, out)
    assert not (out / "manifest.json").exists()
    assert not (out / "images").exists() or not any((out / "images").iterdir())


def test_plant_unavailable_says_how_to_get_the_data(tmp_path):
    why = unavailable_reason("plant", {"archive": str(tmp_path / "nope.zip")})
    assert "may not be redistributed" in why and "plant-phenotyping.org" in why and "nope.zip" in why
    assert "ara2012_plant001_rgb.png" in why
    assert "not set" in unavailable_reason("plant", {})
    assert unavailable_reason("plant", {"archive": str(tmp_path)}) is None
    with pytest.raises(ConfigError, match="options.selection"):
        unavailable_reason("plant", {"archive": "x", "selection": "some"})
    with pytest.raises(ConfigError, match="tracking_pattern"):
        unavailable_reason("plant", {"tracking_pattern": "(?P<plant>\\d+)"})


# ---------------------------------------------------------------------------------------------- bad input


def _good_plant(tmp_path):
    ids = ["ara2012_plant001", "ara2012_plant002", "ara2013_plant01_frame01"]
    return ids, plant_files(ids)


@pytest.mark.parametrize("damage, message", [
    ("unreadable_image", r"ara2012_plant002_rgb\.png: cannot be read as an image"),
    ("other_size", r"ara2012_plant002_label\.png: label image is 5x5 but its image .*ara2012_plant002_rgb\.png "
                   r"is 8x10; expected the same size"),
    ("empty_mask", r"ara2012_plant002_label\.png: no leaf in this label image"),
    ("missing_label", r"ara2012_plant002_rgb\.png: no label image beside it; expected .*ara2012_plant002_label\.png"),
    ("unexpected_layout", r"no Arabidopsis image of the Plant or Tracking subsets found.*expected "
                          r"Plant_Phenotyping_Datasets/Plant/Ara2012"),
    ("truncated_archive", r"p\.zip: not a readable zip archive .*truncated"),
    ("missing_archive", r"gone\.zip: not found; expected the Plant Phenotyping Datasets archive"),
])
def test_bad_plant_input_fails_naming_the_file_and_leaves_the_earlier_conversion_intact(tmp_path, damage, message):
    ids, files = _good_plant(tmp_path)
    out = tmp_path / "out"
    good = write_zip(tmp_path / "good.zip", files)
    convert({"source": "plant", "options": {"archive": str(good), "selection": "all"}}, out)
    before = snapshot(out)
    assert "manifest.json" in before and len([k for k in before if k.startswith("images/")]) == 3

    member = plant_member("ara2012_plant002")
    label = member.replace("_rgb", "_label")
    if damage == "unreadable_image":
        files[member] = b"\x89PNG\r\n\x1a\n not really"
    elif damage == "other_size":
        files[label] = leaf_label(5, 5)
    elif damage == "empty_mask":
        files[label] = png_bytes(np.zeros((8, 10), np.uint8), "P", [RED])
    elif damage == "missing_label":
        del files[label]
    elif damage == "unexpected_layout":
        files = {name.replace("/Plant/", "/Plants/").replace("/Tracking/", "/Track/"): data
                 for name, data in files.items()}
    archive = write_zip(tmp_path / "p.zip", files)
    if damage == "truncated_archive":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    if damage == "missing_archive":
        archive = tmp_path / "gone.zip"
    with pytest.raises(DataError, match=message):
        convert({"source": "plant", "options": {"archive": str(archive), "selection": "all"}}, out)
    assert snapshot(out) == before  # every earlier file, the manifest included, byte for byte
    assert not list(out.glob(".staging-*"))

    fresh = tmp_path / "fresh"
    with pytest.raises(DataError):
        convert({"source": "plant", "options": {"archive": str(archive), "selection": "all"}}, fresh)
    assert not (fresh / "manifest.json").exists()


def test_damaged_member_of_a_zip_names_the_member(tmp_path):
    ids, files = _good_plant(tmp_path)
    archive = write_zip(tmp_path / "p.zip", files)
    data = bytearray(archive.read_bytes())
    target = plant_member("ara2012_plant002").encode()
    at = data.find(target) + len(target)  # first occurrence: the local header; the member's data follows
    data[at + 20: at + 40] = b"\x00" * 20
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"p\.zip:Plant_Phenotyping_Datasets/Plant/Ara2012/ara2012_plant002_rgb\.png"):
        convert({"source": "plant", "options": {"archive": str(archive), "selection": "all"}}, tmp_path / "o")


def test_a_new_conversion_replaces_stale_ids_of_an_earlier_one(tmp_path):
    ids, files = _good_plant(tmp_path)
    out = tmp_path / "out"
    convert({"source": "plant", "options": {"archive": str(write_tree(tmp_path / "a", files)),
                                            "selection": "all"}}, out)
    fewer = {k: v for k, v in files.items() if "plant002" not in k}
    convert({"source": "plant", "options": {"archive": str(write_tree(tmp_path / "b", fewer)),
                                            "selection": "all"}}, out)
    assert CanonicalDataset(out).ids == ["ara2012_plant001", "ara2013_plant01_frame01"]
    assert sorted(p.stem for p in (out / "labels").glob("*.png")) == CanonicalDataset(out).ids


# ---------------------------------------------------------------------------------------------- lsc


def test_lsc_training_layout(tmp_path):
    base = "CVPPP2017_LSC_training/training"
    files = {
        f"{base}/A1/plant001_rgb.png": rgb_image(), f"{base}/A1/plant001_label.png": leaf_label(),
        f"{base}/A1/plant001_fg.png": png_bytes(np.zeros((8, 10), np.uint8)),
        f"{base}/A1/plant004_rgb.png": rgb_image(), f"{base}/A1/plant004_label.png": leaf_label(gray_leaf=True),
        f"{base}/A2/plant002_rgb.png": rgb_image(), f"{base}/A2/plant002_label.png": leaf_label(),
        f"{base}/A3/plant003_rgb.png": rgb_image(), f"{base}/A3/plant003_label.png": leaf_label(),
        f"{base}/A1.csv": b"plant001_rgb.png,2\n",
        "CVPPP2017_LSC_testing/testing/A1/plant900_rgb.png": rgb_image(),
    }
    archive = write_zip(tmp_path / "lsc.zip", files)
    manifest = convert({"source": "lsc", "options": {"archive": str(archive), "subsets": ["A1", "A2"]}},
                       tmp_path / "out")
    assert manifest["ids"] == ["A1_plant001", "A1_plant004", "A2_plant002"]
    assert manifest["subsets"] == {"A1": 2, "A2": 1}
    assert manifest["code_rule"]["dropped_leaves"] == 1
    assert manifest["skipped"]["unlabelled_images"] == {"A1": 1}
    assert sorted(np.unique(read_label_map(tmp_path / "out" / "labels" / "A1_plant001.png"))) == [0, 1, 3]

    only_test = write_zip(tmp_path / "test.zip", {"testing/A1/plant900_rgb.png": rgb_image()})
    with pytest.raises(DataError, match="no labelled image of A1.*without a label image: a testing archive"):
        convert({"source": "lsc", "options": {"archive": str(only_test)}}, tmp_path / "o2")
    assert "CVPPP2017-challenge" in unavailable_reason("lsc", {"archive": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="options.subsets"):
        unavailable_reason("lsc", {"subsets": ["B1"]})


# ---------------------------------------------------------------------------------------------- neural


def _neural_folder(root: Path, n=3, suffix="") -> Path:
    for k in range(n):
        gray = np.random.default_rng(k).integers(0, 255, (6, 9), dtype=np.uint8)
        write_tree(root, {f"images/cell{k:03d}.png": png_bytes(np.stack([gray] * 3, -1))})
        mask = np.zeros((6, 9, 3), np.uint8)
        mask[0:2, 0:3] = RED
        mask[3:6, 5:9] = GREEN
        mask[4:6, 0:2] = RED  # the same colour again: one cell in two pieces (or two cells)
        write_tree(root, {f"masks/cell{k:03d}{suffix}.png": png_bytes(mask)})
    return root


def test_neural_folder_with_colour_masks(tmp_path):
    folder = _neural_folder(tmp_path / "neural", suffix="_mask")
    write_tree(folder, {"masks/orphan_mask.png": png_bytes(np.zeros((6, 9), np.uint8))})
    spec = {"source": "neural", "options": {"folder": str(folder), "mask_suffix": "_mask"}}
    manifest = convert(spec, tmp_path / "out")
    assert manifest["ids"] == ["cell000", "cell001", "cell002"] and manifest["objects"] == 6
    assert manifest["multi_piece_objects"]["count"] == 3
    assert manifest["skipped"]["masks_without_image"] == 1
    assert read_image(tmp_path / "out" / "images" / "cell000.png").ndim == 2  # equal channels -> gray

    spec["options"]["split_pieces"] = True
    manifest = convert(spec, tmp_path / "out2")
    assert manifest["objects"] == 9
    assert read_label_map(tmp_path / "out2" / "labels" / "cell001.png").max() == 3


def test_neural_authors_layout_and_bad_inputs(tmp_path):
    folder = tmp_path / "authors"
    for subset, k in (("train", 0), ("val", 1), ("test", 2)):
        write_tree(folder, {f"{subset}/img{k}.png": png_bytes(np.full((5, 5), 90, np.uint8)),
                            f"mask/img{k}.png": png_bytes(np.pad(np.full((3, 3, 3), 77, np.uint8),
                                                                 ((1, 1), (1, 1), (0, 0))))})
    options = {"folder": str(folder), "image_dirs": ["train", "val", "test"], "mask_dir": "mask"}
    manifest = convert({"source": "neural", "options": options}, tmp_path / "out")
    assert manifest["ids"] == ["img0", "img1", "img2"]
    assert manifest["code_rule"]["dropped_cells"] == 3  # a gray cell colour: the authors' rule loses it

    (folder / "mask" / "img1.png").unlink()
    with pytest.raises(DataError, match=r"val/img1\.png: no mask; expected .*mask/img1\.png"):
        convert({"source": "neural", "options": options}, tmp_path / "out")
    (folder / "mask" / "img1.png").write_bytes(png_bytes(np.zeros((5, 5), np.uint8)))
    with pytest.raises(DataError, match=r"mask/img1\.png: no cell in this label image"):
        convert({"source": "neural", "options": options}, tmp_path / "out")
    (folder / "mask" / "img1.png").write_bytes(png_bytes(np.ones((4, 5), np.uint8)))
    with pytest.raises(DataError, match=r"mask/img1\.png: label image is 4x5 but its image .*val/img1\.png is 5x5"):
        convert({"source": "neural", "options": options}, tmp_path / "out")
    (folder / "val" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes\.txt: not an image file"):
        convert({"source": "neural", "options": options}, tmp_path / "out")
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 3  # the good conversion is intact


def test_neural_unavailable_explains_the_layout(tmp_path):
    why = unavailable_reason("neural", {"folder": str(tmp_path / "absent")})
    assert "not public" in why and "images/<name>.png" in why and "masks/<name>.png" in why
    assert "other datasets run without it" in why
    (tmp_path / "f" / "images").mkdir(parents=True)
    assert "has no masks folder" in unavailable_reason("neural", {"folder": str(tmp_path / "f")})
    (tmp_path / "f" / "masks").mkdir()
    assert unavailable_reason("neural", {"folder": str(tmp_path / "f")}) is None


# ---------------------------------------------------------------------------------------------- ctc


def _ctc_files(name="Fluo-N2DL-HeLa", frames=4, gold=(1, 3), silver=True, size=(6, 8)) -> dict:
    files = {}
    rng = np.random.default_rng(0)
    for seq in ("01", "02"):
        for t in range(frames):
            files[f"{name}/{seq}/t{t:03d}.tif"] = tif_bytes(rng.integers(0, 4000, size, dtype=np.uint16))
            mask = np.zeros(size, np.uint16)
            mask[1:3, 1:3] = 1
            mask[3:6, 4:8] = 2
            if silver:
                files[f"{name}/{seq}_ST/SEG/man_seg{t:03d}.tif"] = tif_bytes(mask)
            if t in gold:
                files[f"{name}/{seq}_GT/SEG/man_seg{t:03d}.tif"] = tif_bytes(mask * 7)
        files[f"{name}/{seq}_GT/TRA/man_track000.tif"] = tif_bytes(np.zeros(size, np.uint16))
    return files


@pytest.mark.parametrize("truth, n, gold_ids", [("silver", 8, 0), ("gold", 4, 4), ("both", 8, 4)])
def test_ctc_truth_choice(tmp_path, truth, n, gold_ids):
    files = _ctc_files()
    archive = write_zip(tmp_path / "Fluo-N2DL-HeLa.zip", files)
    spec = {"source": "ctc", "options": {"name": "Fluo-N2DL-HeLa", "archive": str(archive), "truth": truth}}
    record = fetch(spec, tmp_path / "raw")
    assert record["local"] and record["files"][0]["sha256"]
    manifest = convert(spec, tmp_path / "out", tmp_path / "raw")
    assert manifest["images"] == n and manifest["truth"] == truth
    assert manifest["truth_counts"]["gold"] == gold_ids and sum(manifest["truth_counts"].values()) == n
    assert manifest["truth_available"] == {"01": {"gold": 2, "silver": 4, "markers": 1},
                                           "02": {"gold": 2, "silver": 4, "markers": 1}}
    if truth == "both":
        assert manifest["truth_of"]["01_t001"] == "gold" and manifest["truth_of"]["01_t000"] == "silver"
        assert read_label_map(tmp_path / "out" / "labels" / "01_t001.png").max() == 14
    image = read_image(tmp_path / "out" / "images" / f"02_t00{1 if truth == 'gold' else 0}.png")
    raw = tifffile.imread(io.BytesIO(files[f"Fluo-N2DL-HeLa/02/t00{1 if truth == 'gold' else 0}.tif"]))
    assert image.dtype == np.uint8 and np.array_equal(image, to_uint8(raw))


def test_ctc_extracted_folder_8bit_and_bad_inputs(tmp_path):
    files = _ctc_files("PhC-C2DH-U373", frames=2, gold=(), silver=True)
    files["PhC-C2DH-U373/01/t000.tif"] = tif_bytes(np.full((6, 8), 17, np.uint8))
    root = write_tree(tmp_path / "ctc", files)
    spec = {"source": "ctc", "options": {"name": "PhC-C2DH-U373", "archive": str(root)}}
    manifest = convert(spec, tmp_path / "out")
    assert manifest["ids"] == ["01_t000", "01_t001", "02_t000", "02_t001"]
    assert read_image(tmp_path / "out" / "images" / "01_t000.png").max() == 17  # 8-bit kept as is

    with pytest.raises(DataError, match=r"01_GT/SEG: no man_segNNN\.tif masks; options\.truth 'gold'"):
        convert({"source": "ctc", "options": {**spec["options"], "truth": "gold"}}, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"options.name is 'Fluo-N2DL-HeLa' but .* holds the Cell Tracking "
                                          r"Challenge set 'PhC-C2DH-U373'"):
        convert({"source": "ctc", "options": {"name": "Fluo-N2DL-HeLa", "archive": str(root)}}, tmp_path / "out")
    with pytest.raises(DataError, match=r"01: no 'PhC-C2DH-U373/' folder; expected .* \(the archive holds: t000.tif, "
                                        r"t001.tif\)\. Point options.archive at PhC-C2DH-U373.zip"):
        convert({"source": "ctc", "options": {**spec["options"], "archive": str(root / "PhC-C2DH-U373" / "01")}},
                tmp_path / "out")
    (root / "PhC-C2DH-U373" / "01_ST" / "SEG" / "man_seg001.tif").write_bytes(tif_bytes(np.zeros((6, 9), np.uint16)))
    with pytest.raises(DataError, match=r"01_ST/SEG/man_seg001\.tif: label image is 6x9 but its image"):
        convert(spec, tmp_path / "out")
    (root / "PhC-C2DH-U373" / "01_ST" / "SEG" / "man_seg001.tif").write_bytes(tif_bytes(np.zeros((6, 8), np.uint16)))
    with pytest.raises(DataError, match=r"man_seg001\.tif: no cell in this label image"):
        convert(spec, tmp_path / "out")
    (root / "PhC-C2DH-U373" / "01_ST" / "SEG" / "man_seg001.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match=r"man_seg001\.tif: cannot be read as a TIFF image"):
        convert(spec, tmp_path / "out")
    (root / "PhC-C2DH-U373" / "01_ST" / "SEG" / "man_seg009.tif").write_bytes(tif_bytes(np.ones((6, 8), np.uint16)))
    with pytest.raises(DataError, match=r"man_seg009\.tif: no frame 01/t009\.tif"):
        convert(spec, tmp_path / "out")
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 4  # the good conversion is intact


def test_ctc_options_and_unavailable(tmp_path):
    with pytest.raises(ConfigError, match="options.name"):
        unavailable_reason("ctc", {})
    with pytest.raises(ConfigError, match="options.truth"):
        unavailable_reason("ctc", {"name": "PhC-C2DL-PSC", "truth": "bronze"})
    why = unavailable_reason("ctc", {"name": "PhC-C2DL-PSC", "archive": str(tmp_path / "PhC-C2DL-PSC.zip")})
    assert "training-datasets/PhC-C2DL-PSC.zip" in why and "PhC-C2DL-PSC/01_ST/SEG/man_segNNN.tif" in why
    assert unavailable_reason("ctc", {"name": "PhC-C2DL-PSC"}) is None  # the fetch step downloads it


def test_ctc_fetch_downloads_through_the_fetch_module(tmp_path):
    pytest.importorskip("objguided.data.fetch")
    archive = write_zip(tmp_path / "PhC-C2DL-PSC.zip", _ctc_files("PhC-C2DL-PSC", frames=1, gold=(0,)))
    spec = {"source": "ctc", "options": {"name": "PhC-C2DL-PSC", "truth": "both", "url": archive.as_uri()}}
    record = fetch(spec, tmp_path / "raw")
    assert record["files"][0]["name"] == "PhC-C2DL-PSC.zip" and (tmp_path / "raw" / "PhC-C2DL-PSC.zip").is_file()
    manifest = convert(spec, tmp_path / "out", tmp_path / "raw")
    assert manifest["truth_counts"] == {"gold": 2, "silver": 0}


# ---------------------------------------------------------------------------------------------- grouped split


def test_grouped_split_keeps_each_tracked_plant_in_one_subset():
    ids = paper_ids()
    split = grouped_split(ids, plant_group, [0.6, 0.2, 0.2], seed=3)
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(ids)
    where = {}
    for subset in ("train", "val", "test"):
        for image_id in split[subset]:
            assert where.setdefault(plant_group(image_id), subset) == subset
    tracked = {plant_group(i) for i in ids if "_frame" in i}
    assert len(tracked) == 12 and all(g in where for g in tracked)
    sizes = [len(split[k]) for k in ("train", "val", "test")]
    assert abs(sizes[0] - 0.6 * 473) <= 17 and min(sizes) > 0
    assert split == grouped_split(list(reversed(ids)), plant_group, [0.6, 0.2, 0.2], seed=3)  # deterministic
    assert split != grouped_split(ids, plant_group, [0.6, 0.2, 0.2], seed=4)


def test_grouped_split_edge_cases():
    with pytest.raises(ConfigError, match="at least three groups"):
        grouped_split(["01_t000", "01_t001", "02_t000"], sequence_group, [0.6, 0.2, 0.2], 0)
    with pytest.raises(ConfigError, match="split.fractions"):
        grouped_split(["a", "b", "c"], str, [0.6, 0.6, 0.2], 0)
    few = grouped_split(["a", "b", "c"], str, [0.98, 0.01, 0.01], 0)
    assert all(len(few[k]) == 1 for k in ("train", "val", "test"))


# ---------------------------------------------------------------------------------------------- example config


def test_example_config_is_valid_and_leaves_absent_user_data_out():
    import yaml

    config = validate_config(yaml.safe_load((REPO / "config" / "user-data.example.yaml").read_text()))
    absent = {name for name, d in config["datasets"].items() if unavailable_reason(d["source"], d["options"])}
    assert absent == {"plant", "neural", "ctc-hela"}
    assert config["datasets"]["plant"]["split"]["kind"] == "files"
    assert config["datasets"]["plant"]["split"]["folder"] == "datasets/plant/split"


# ---------------------------------------------------------------------------------------------- cards


@pytest.mark.parametrize("card", ["plant", "lsc", "neural", "ctc"])
def test_dataset_card_agrees_with_the_source_defaults(card):
    import dataclasses

    import yaml

    from objguided.data.sources import get_source

    text = yaml.safe_load((REPO / "datasets" / f"{card}.yaml").read_text())
    assert text["name"] == card and text["converter"]["source"] == card
    for key in ("title", "description", "licence", "citation", "sources", "split"):
        assert text.get(key), key
    fields = {f.name: f for f in dataclasses.fields(get_source(card).Options)}
    defaults = {name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for name, f in fields.items()}
    assert text["converter"]["options"] == defaults
    if text["split"]["kind"] == "files":
        assert (REPO / text["split"]["folder"] / "train.txt").is_file()


def test_planning_the_example_config_warns_and_runs_the_rest(snakemake_cmd, repo, tmp_path):
    import subprocess

    result = subprocess.run(snakemake_cmd + ["-s", str(repo / "Snakefile"), "--directory", str(tmp_path),
                                             "--configfile", str(repo / "config" / "user-data.example.yaml"),
                                             "-n", "--cores", "1"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    for name, hint in (("plant", "may not be redistributed"), ("neural", "It is not public"),
                       ("ctc-hela", "training-datasets/Fluo-N2DL-HeLa.zip")):
        assert f"dataset '{name}' is left out of this run" in out and hint in out
    assert "synth-plant" in out
