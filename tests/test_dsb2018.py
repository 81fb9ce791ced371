"""The dsb2018 source on a small real fixture (tests/data/dsb2018_mini.zip: 3 images, 23 nuclei, official
layout; rebuilt by tests/data/make_dsb2018_mini.py), its bad inputs, the card, the mirror config and the
paper split."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from objguided.cli import main as cli
from objguided.data.canonical import CanonicalDataset
from objguided.data.convert import convert, fetch
from objguided.data.sources.dsb2018 import DSB2018Options, paint
from objguided.data.split import split_from_files
from objguided.errors import DataError

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "tests" / "data" / "dsb2018_mini.zip"
MIRROR = REPO.parent / "shared" / "data" / "dsb2018" / "stage1_train.zip"
SPLIT = REPO / "datasets" / "dsb2018" / "split"
SHARED_SPLIT = REPO.parent / "shared" / "splits" / "dsb2018"


def spec(url: str, **options) -> dict:
    return {"source": "dsb2018", "options": {"url": url, "size": 0, **options}}


def members() -> dict[str, bytes]:
    with zipfile.ZipFile(MINI) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_zip(path: Path, content: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return path


def raw_with(tmp_path: Path, content: dict[str, bytes] | bytes, name: str = "bad") -> Path:
    """A raw folder holding an archive stage1_train.zip with this content."""
    raw = tmp_path / f"raw-{name}"
    raw.mkdir()
    if isinstance(content, bytes):
        (raw / "stage1_train.zip").write_bytes(content)
    else:
        write_zip(raw / "stage1_train.zip", content)
    return raw


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def masks_by_image() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in sorted(members()):
        parts = name.split("/")
        if len(parts) == 3 and parts[1] == "masks" and parts[2]:
            out.setdefault(parts[0], []).append(name)
    return out


MASKS = masks_by_image()
FIRST = sorted(MASKS)[0]
FIRST_MASK = MASKS[FIRST][0]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The mini archive fetched (file:// URL) and converted with two worker processes."""
    root = tmp_path_factory.mktemp("dsb")
    raw, out = root / "raw", root / "data"
    record = fetch(spec(f"file://{MINI}"), raw)
    manifest = convert(spec(f"file://{MINI}", workers=2), out, raw)
    return raw, out, record, manifest


# ---------------------------------------------------------------------------------------------- convert


def test_fetch_records_the_archive(converted):
    raw, _, record, _ = converted
    (entry,) = record["files"]
    assert entry["name"] == "dsb2018_mini.zip" and entry["sha256"] == hashlib.sha256(MINI.read_bytes()).hexdigest()
    assert (raw / "dsb2018_mini.zip.sha256.lock").is_file() and (raw / "fetched.json").is_file()


def test_instances_match_the_mask_files(converted):
    _, out, _, manifest = converted
    data = CanonicalDataset(out)
    assert data.ids == sorted(MASKS)
    assert manifest["images"] == 3 and manifest["objects"] == manifest["mask_files"] == 23
    assert manifest["objects_per_image"] == {i: len(m) for i, m in MASKS.items()}
    assert manifest["overlaps"] == {"policy": "smaller object on top", "images": 0, "objects": 0, "pixels": 0,
                                    "hidden_objects": 0}
    assert manifest["archive_sha256"] == hashlib.sha256(MINI.read_bytes()).hexdigest()
    content = members()
    for sample in data:
        rgba = np.asarray(Image.open(io.BytesIO(content[f"{sample.id}/images/{sample.id}.png"])))
        assert sample.image.dtype == np.uint8 and sample.image.shape == (256, 256, 3)
        assert np.array_equal(sample.image, rgba[..., :3])  # RGBA -> RGB, pixels kept
        with Image.open(data.label_path(sample.id)) as im:
            assert np.asarray(im).dtype == np.uint16
        assert sorted(np.unique(sample.labels)) == list(range(len(MASKS[sample.id]) + 1))
        for k, member in enumerate(MASKS[sample.id], start=1):  # instance k = k-th mask file by name
            mask = np.asarray(Image.open(io.BytesIO(content[member]))) > 0
            assert np.array_equal(sample.labels == k, mask), member


def test_one_worker_gives_the_same_output(converted, tmp_path):
    raw, out, _, _ = converted
    convert(spec(f"file://{MINI}", workers=1), tmp_path / "data", raw)
    assert snapshot(tmp_path / "data") == snapshot(out)


def test_a_new_conversion_replaces_the_old_folder_whole(converted, tmp_path):
    raw = converted[0]
    out = tmp_path / "data"
    convert(spec(f"file://{MINI}"), out, raw)
    (out / "images" / "stale.png").write_bytes(b"old")
    convert(spec(f"file://{MINI}"), out, raw)
    assert not (out / "images" / "stale.png").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_overlaps_keep_the_smaller_object_on_top_and_are_counted(tmp_path):
    image = np.zeros((8, 8, 4), np.uint8)
    big, small, hide, a, c = (np.zeros((8, 8), np.uint8) for _ in range(5))
    big[0:6, 0:6] = 255
    small[2:4, 2:4] = 255  # inside big
    hide[6:8, 6:8] = 255  # a 2x2 object covered by two smaller 2x1 ones (a, c): hidden
    a[6:8, 6:7] = 255
    c[6:8, 7:8] = 255
    content = {"x/images/x.png": png(image), "x/masks/1big.png": png(big), "x/masks/2small.png": png(small),
               "x/masks/3hide.png": png(hide), "x/masks/4a.png": png(a), "x/masks/5c.png": png(c)}
    raw = raw_with(tmp_path, content, "overlap")
    manifest = convert(spec("file:///any/stage1_train.zip"), tmp_path / "data", raw)
    labels = CanonicalDataset(tmp_path / "data")[0].labels
    assert labels[2, 2] == 2 and labels[0, 0] == 1  # small on top of big
    assert set(np.unique(labels[6:8, 6:8])) == {4, 5}  # 3hide covered completely
    assert manifest["mask_files"] == 5 and manifest["objects"] == 4
    assert manifest["overlaps"] == {"policy": "smaller object on top", "images": 1, "objects": 5, "pixels": 8,
                                    "hidden_objects": 1}


def test_paint_is_independent_of_the_mask_order():
    masks = [np.arange(0, 16), np.array([5, 6])]
    labels, stats = paint(masks, (4, 4))
    swapped, _ = paint(masks[::-1], (4, 4))
    assert labels[1, 1] == 2 and swapped[1, 1] == 1 and stats["overlap_pixels"] == 2


# ---------------------------------------------------------------------------------------------- bad inputs


def damaged_member(data: bytes, member: str) -> bytes:
    """The archive with one byte of ``member``'s compressed data flipped (a CRC or inflate error)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(member)
    local = data[info.header_offset:info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
    pos = start + info.compress_size // 2
    return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]


def _bad_inputs():
    image = f"{FIRST}/images/{FIRST}.png"
    mini = MINI.read_bytes()
    good = members()
    yield "truncated archive", mini[: len(mini) // 2], r"not a readable zip archive .*truncated or damaged"
    yield "damaged member", damaged_member(mini, FIRST_MASK), rf"'{FIRST_MASK}' is damaged in the archive"
    yield "corrupt mask png", {**good, FIRST_MASK: b"\x89PNG\r\n\x1a\n garbage"}, \
        rf"'{FIRST_MASK}' cannot be read as a PNG image"
    yield "unreadable image", {**good, image: b"not an image"}, rf"'{image}' cannot be read as a PNG image"
    yield "mask of another size", {**good, FIRST_MASK: png(np.full((255, 256), 255, np.uint8))}, \
        rf"mask '{FIRST_MASK}' is 256x255 \(WxH\) but its image is 256x256"
    yield "empty mask", {**good, FIRST_MASK: png(np.zeros((256, 256), np.uint8))}, \
        rf"mask '{FIRST_MASK}' is empty"
    yield "wrapped in a folder", {f"stage1_train/{k}": v for k, v in good.items()}, \
        r"member 'stage1_train/.*' is outside the DSB2018 layout; expected only <id>/images/<id>.png"
    yield "stray file", {**good, "README.txt": b"hi"}, r"member 'README.txt' is outside the DSB2018 layout"
    yield "image missing", {k: v for k, v in good.items() if k != image}, \
        rf"'{FIRST}/' has masks but no image; expected '{FIRST}/images/{FIRST}.png'"
    yield "no masks", {k: v for k, v in good.items() if not k.startswith(f"{FIRST}/masks/")}, \
        rf"'{FIRST}/' has no mask"
    yield "empty archive", {}, r"no image in the archive"


BAD = list(_bad_inputs())


# every case in one process; two per-member errors also through the process pool
CASES = [(name, 1) for name, _, _ in BAD] + [("corrupt mask png", 2), ("mask of another size", 2)]


@pytest.mark.parametrize(("case", "workers"), CASES)
def test_bad_input_stops_with_a_clear_message_and_keeps_the_earlier_output(converted, tmp_path, case, workers):
    good_raw = converted[0]
    out = tmp_path / "data"
    convert(spec(f"file://{MINI}"), out, good_raw)  # an earlier, good output
    before = snapshot(out)
    content, message = next((c, m) for name, c, m in BAD if name == case)
    raw = raw_with(tmp_path, content)
    with pytest.raises(DataError, match=message) as err:
        convert(spec("file:///any/stage1_train.zip", workers=workers), out, raw)
    assert str(raw / "stage1_train.zip") in str(err.value)  # names the archive
    assert snapshot(out) == before  # images, labels and manifest as they were
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels", "manifest.json"]  # no staging left


def test_convert_without_a_fetched_archive(tmp_path):
    with pytest.raises(DataError, match=r"stage1_train.zip: archive not found; run `objguided fetch`"):
        convert(spec("file:///any/stage1_train.zip"), tmp_path / "data", tmp_path)


def test_fetch_rejects_a_truncated_first_download(tmp_path):
    bad = tmp_path / "stage1_train.zip"
    bad.write_bytes(MINI.read_bytes()[:5000])
    raw = tmp_path / "raw"
    with pytest.raises(DataError, match="rejected and discarded .*not a readable zip archive"):
        fetch(spec(f"file://{bad}"), raw)
    assert sorted(p.name for p in raw.iterdir()) == []  # no archive, no lock, no fetched.json


def test_cli_verbs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the relative file:// URL is taken from here, as under Snakemake
    s = json.dumps(spec("file://tests/data/dsb2018_mini.zip", workers=1))
    assert cli(["fetch", "--spec", s, "--raw", str(tmp_path / "raw")]) == 0
    assert cli(["convert", "--spec", s, "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "data")]) == 0
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["objects"] == 23
    bad = json.dumps(spec("file://tests/data/nothing.zip"))
    assert cli(["fetch", "--spec", bad, "--raw", str(tmp_path / "raw2")]) == 2
    assert "nothing.zip: file not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- card, config, split


def test_card_and_source_defaults_agree():
    card = yaml.safe_load((REPO / "datasets" / "dsb2018.yaml").read_text())
    options = DSB2018Options()
    (source,) = card["sources"]
    assert source["url"] == options.url and source["size"] == options.size
    assert source["sha256"]["accepted"] == options.sha256
    assert card["converter"]["options"] == {k: getattr(options, k) for k in card["converter"]["options"]}
    assert set(card["converter"]["options"]) == set(vars(options))
    assert (REPO / card["split"]["folder"]).is_dir() and (REPO / card["config"]).is_file()


def test_mirror_config_is_valid_and_points_at_the_mirror(monkeypatch):
    from objguided.config import load_config
    from objguided.data.fetch import local_path

    config = load_config(REPO / "config" / "dsb2018-mirror.yaml")
    dataset = config["datasets"]["dsb2018"]
    assert dataset["paper_dataset"] == "dsb2018" and dataset["split"]["kind"] == "files"
    assert (REPO / dataset["split"]["folder"]) == SPLIT
    monkeypatch.chdir(REPO)
    path = local_path(dataset["options"]["url"])
    assert path.resolve() == MIRROR.resolve()
    if not MIRROR.is_file():
        pytest.skip("../shared/data/dsb2018 is not here")
    assert path.stat().st_size == DSB2018Options().size


def test_paper_split_from_the_committed_files():
    ids = sorted({line.strip() for f in ("train", "val", "test") for line in (SPLIT / f"{f}.txt").read_text().split()})
    if MIRROR.is_file():
        with zipfile.ZipFile(MIRROR) as zf:
            ids = sorted({n.split("/")[0] for n in zf.namelist()})
    assert len(ids) == 670
    split = split_from_files(SPLIT, ids)
    assert [len(split[s]) for s in ("train", "val", "test")] == [402, 134, 134]
    assert sorted(split["train"] + split["val"] + split["test"]) == ids
    if SHARED_SPLIT.is_dir():
        for subset in ("train", "val", "test"):
            assert (SPLIT / f"{subset}.txt").read_bytes() == (SHARED_SPLIT / f"{subset}.txt").read_bytes()


# ---------------------------------------------------------------------------------------------- stage1_test (extra)


def rle(mask: np.ndarray) -> str:
    """Kaggle's encoding: 1-based starts of runs down the columns."""
    flat = np.concatenate([[0], mask.T.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))


def stage1_test_raw(tmp_path: Path, edit=None) -> Path:
    """The mini archive re-packed as stage1_test (images only) + its stage1_solution.csv."""
    content = members()
    raw = tmp_path / "raw-test"
    raw.mkdir()
    write_zip(raw / "stage1_test.zip", {k: v for k, v in content.items() if "/masks/" not in k})
    lines = ["ImageId,EncodedPixels,Height,Width,Usage"]
    for image_id, masks in MASKS.items():
        for member in masks:
            mask = np.asarray(Image.open(io.BytesIO(content[member]))) > 0
            lines.append(f"{image_id},{rle(mask)},{mask.shape[0]},{mask.shape[1]},Public")
    if edit:
        lines = edit(lines)
    (raw / "stage1_solution.csv").write_text("\n".join(lines) + "\n")
    return raw


def test_stage1_test_from_the_solution_csv_matches_the_masks(converted, tmp_path):
    _, train_out, _, _ = converted
    raw = stage1_test_raw(tmp_path)
    s = {"source": "dsb2018-stage1-test", "options": {"url": "file:///x/stage1_test.zip",
                                                       "solution_url": "file:///x/stage1_solution.csv"}}
    manifest = convert(s, tmp_path / "data", raw)
    assert manifest["images"] == 3 and manifest["objects"] == 23 and manifest["usage"] == {"Public": 23}
    assert snapshot(tmp_path / "data" / "labels") == snapshot(train_out / "labels")
    assert snapshot(tmp_path / "data" / "images") == snapshot(train_out / "images")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda lines: lines[:1] + lines[2:] + [lines[1].replace(FIRST, "f" * 64)],
     r"its images and those of .*stage1_test.zip differ \(1 only in the CSV"),
    (lambda lines: [lines[0]] + [lines[1].replace(",256,256,", ",256,255,")] + lines[2:],
     r"line 2 \(ImageId .*\): Height x Width 256x255 but the image is 256x256"),
    (lambda lines: [lines[0]] + [f"{FIRST},1 2 3,256,256,Public"] + lines[2:],
     r"line 2 .*odd count of numbers"),
    (lambda lines: [lines[0]] + [f"{FIRST},65536 2,256,256,Public"] + lines[2:], r"run outside the 256x256 image"),
    (lambda lines: [lines[0]] + [f"{FIRST},,256,256,Public"] + lines[2:], r"EncodedPixels is empty"),
    (lambda lines: ["ImageId,Pixels,Height,Width"] + lines[1:], r"no column EncodedPixels"),
])
def test_stage1_test_bad_solution(converted, tmp_path, edit, message):
    raw = stage1_test_raw(tmp_path, edit)
    s = {"source": "dsb2018-stage1-test", "options": {"url": "file:///x/stage1_test.zip",
                                                       "solution_url": "file:///x/stage1_solution.csv"}}
    out = tmp_path / "data"
    convert(spec(f"file://{MINI}"), out, converted[0])
    before = snapshot(out)
    with pytest.raises(DataError, match=message):
        convert(s, out, raw)
    assert snapshot(out) == before


def test_card_extra_set_agrees_with_its_source():
    from objguided.data.sources.dsb2018 import DSB2018TestOptions

    extra = yaml.safe_load((REPO / "datasets" / "dsb2018.yaml").read_text())["extra_sets"]["stage1_test"]
    assert extra["options"] == vars(DSB2018TestOptions())
    assert [f["url"] for f in extra["files"]] == [DSB2018TestOptions().url, DSB2018TestOptions().solution_url]
