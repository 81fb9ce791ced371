"""Source `folder` (a user's own images and masks): the three layouts built from the synthetic generators,
each run through the CLI (convert, split, watershed train/predict, score); the channel and normalisation
rules; the errors a bad folder gets; the split defaults, the card and the example config."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from objguided.cli import main
from objguided.config import validate_config
from objguided.data.canonical import read_image, read_label_map, read_split, to_uint8
from objguided.data.convert import convert
from objguided.data.sources import unavailable_reason
from objguided.data.synthetic import generate
from objguided.errors import ConfigError, DataError
from objguided.metrics.coco import encode_mask

REPO = Path(__file__).resolve().parents[1]
#: a small watershed grid: the pipeline is what is tested here, not the tuning
GRID = {"signals": ["auto"], "background_sigmas": [0.0], "threshold_factors": [0.85, 1.0], "min_distances": [3],
        "sigmas": [1.0], "min_sizes": [10]}


def synthetic(n=10, size=56, seed=4, kind="nuclei"):
    return list(generate(kind, n, size, seed))


def save_png(path: Path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path


def save_tif(path: Path, array, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.asarray(array), **kw)
    return path


def two_channel_16bit(image: np.ndarray) -> np.ndarray:
    """A 2xHxW uint16 stack made from a synthetic image: channel 0 its gray signal in a 16-bit range,
    channel 1 the inverse in another range (unrelated ranges, as in fluorescence)."""
    gray = image[..., 0].astype(np.uint16) if image.ndim == 3 else image.astype(np.uint16)
    return np.stack([gray * 180 + 900, (255 - gray) * 40 + 5000]).astype(np.uint16)


def build_canonical(root: Path, samples) -> dict:
    """images/<id>.png (uint8 RGB) + labels/<id>.png or .tif (uint16 / uint8 / int32 id maps)."""
    for k, (image_id, image, labels) in enumerate(samples):
        save_png(root / "images" / f"{image_id}.png", image)
        if k % 3 == 0:
            save_png(root / "labels" / f"{image_id}.png", labels.astype(np.uint16))
        elif k % 3 == 1:
            save_tif(root / "labels" / f"{image_id}.tif", labels.astype(np.int32))
        else:
            save_png(root / "labels" / f"{image_id}.png", labels.astype(np.uint8))
    (root / "images" / "Thumbs.db").write_bytes(b"x")  # not an image: ignored and counted
    return {image_id: (image, labels) for image_id, image, labels in samples}


def build_cellpose(root: Path, samples) -> dict:
    """Even samples: <id>.tif, a 16-bit 2-channel channel-first stack, + <id>_masks.tif; odd ones: Cellpose's
    _img naming as PNG, <id>_img.png + <id>_masks.png; plus Cellpose outputs and a models/ folder to ignore."""
    expected = {}
    for k, (image_id, image, labels) in enumerate(samples):
        if k % 2 == 0:
            stack = two_channel_16bit(image)
            save_tif(root / f"{image_id}.tif", stack)
            save_tif(root / f"{image_id}_masks.tif", labels.astype(np.uint16))
            rgb = np.stack([to_uint8(stack[0]), to_uint8(stack[1]), np.zeros(labels.shape, np.uint8)], axis=-1)
            expected[image_id] = (rgb, labels)
        else:
            save_png(root / f"{image_id}_img.png", image)
            save_png(root / f"{image_id}_masks.png", labels.astype(np.uint16))
            expected[f"{image_id}_img"] = (image, labels)
    save_png(root / f"{samples[0][0]}_cp_masks.png", np.zeros(samples[0][2].shape, np.uint16))  # a prediction
    (root / f"{samples[0][0]}_seg.npy").write_bytes(b"gui")
    (root / "models").mkdir()
    return expected


def rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major flattened mask, starting with a 0-run."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": list(mask.shape), "counts": runs}


def build_coco(root: Path, samples) -> dict:
    """pics/<id>.png + annotations.json: one annotation per object, compressed and uncompressed RLE in turn,
    plus an image without annotations and a crowd annotation (both left out)."""
    images, annotations = [], []
    for k, (image_id, image, labels) in enumerate(samples):
        save_png(root / "pics" / f"{image_id}.png", image)
        images.append({"id": k + 1, "file_name": f"{image_id}.png", "height": labels.shape[0],
                       "width": labels.shape[1]})
        for obj in range(1, int(labels.max()) + 1):
            mask = labels == obj
            seg = encode_mask(mask) if obj % 2 else rle_uncompressed(mask)
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 0,
                                "segmentation": seg})
    crowd = encode_mask(samples[0][2] > 0)
    annotations.append({"id": len(annotations) + 1, "image_id": 1, "category_id": 1, "iscrowd": 1,
                        "segmentation": crowd})
    save_png(root / "pics" / "blank.png", np.zeros((20, 20), np.uint8))
    images.append({"id": 999, "file_name": "blank.png", "height": 20, "width": 20})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "nucleus"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return {image_id: (image, labels) for image_id, image, labels in samples}


BUILDERS = {"canonical": build_canonical, "cellpose": build_cellpose, "coco": build_coco}


def options(layout: str, root: Path) -> dict:
    return {"path": str(root), "layout": layout, **({"images": "pics"} if layout == "coco" else {})}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Each layout's folder, its expected canonical (image, labels) per id, converted once through the CLI."""
    base = tmp_path_factory.mktemp("folder")
    samples = synthetic()
    made = {}
    for layout, build in BUILDERS.items():
        root = base / layout
        root.mkdir()
        expected = build(root, samples)
        data = base / f"{layout}-data"
        spec = {"source": "folder", "options": options(layout, root)}
        assert main(["convert", "--spec", json.dumps(spec), "--out", str(data)]) == 0
        made[layout] = (root, data, expected)
    return made


# ---------------------------------------------------------------------------------------------- the three layouts


@pytest.mark.parametrize("layout", list(BUILDERS))
def test_conversion_reproduces_images_and_label_maps_exactly(folders, layout):
    root, data, expected = folders[layout]
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["source"] == "folder" and manifest["layout"] == layout
    assert manifest["ids"] == sorted(expected) and manifest["images"] == len(expected)
    assert manifest["objects"] == sum(int(labels.max()) for _, labels in expected.values())
    assert "0.1 and 99.9 percentiles" in manifest["normalisation"]["rule"]
    for image_id, (image, labels) in expected.items():
        assert np.array_equal(read_label_map(data / "labels" / f"{image_id}.png"), labels), image_id
        assert np.array_equal(read_image(data / "images" / f"{image_id}.png"), image), image_id


def test_manifests_record_what_was_skipped_and_how_images_were_read(folders):
    canonical = json.loads((folders["canonical"][1] / "manifest.json").read_text())
    assert canonical["skipped"] == {"ignored_files": ["Thumbs.db"]}
    assert canonical["normalisation"]["images_rescaled"] == 0 and canonical["channels"]["padded_to_rgb"] == 0

    cellpose = json.loads((folders["cellpose"][1] / "manifest.json").read_text())
    first = synthetic(1)[0][0]
    assert cellpose["skipped"] == {"cellpose_outputs": [f"{first}_cp_masks.png", f"{first}_seg.npy"],
                                   "ignored_files": [], "ignored_subfolders": ["models"]}
    assert cellpose["normalisation"]["pixel_types"] == {"uint16": 5, "uint8": 5}
    assert cellpose["normalisation"]["images_rescaled"] == 5 and cellpose["channels"]["padded_to_rgb"] == 5
    assert cellpose["channels"]["input_channels"] == {"2": 5, "3": 5}

    coco = json.loads((folders["coco"][1] / "manifest.json").read_text())
    assert coco["skipped"] == {"images_without_annotations": ["blank.png"]}
    assert coco["coco"]["crowd_annotations"] == 1 and coco["coco"]["overlap_pixels"] == 0
    assert coco["coco"]["categories"] == ["nucleus"] and "later one wins" in coco["coco"]["overlap_rule"]


@pytest.mark.parametrize("layout", list(BUILDERS))
def test_split_train_predict_score_through_the_cli(folders, layout, tmp_path):
    _, data, expected = folders[layout]
    split = data / "split.json"
    assert main(["split", "--data", str(data), "--out", str(split)]) == 0  # the default: seeded 60/20/20, seed 0
    subsets = read_split(split)
    assert [len(subsets[k]) for k in ("train", "val", "test")] == [6, 2, 2] and subsets["seed"] == 0
    model, pred, metrics = tmp_path / "model.pt", tmp_path / "predictions.json", tmp_path / "metrics.json"
    assert main(["train", "--method", "watershed", "--params", json.dumps(GRID), "--data", str(data),
                 "--split", str(split), "--device", "cpu", "--out", str(model)]) == 0
    assert main(["predict", "--model", str(model), "--data", str(data), "--split", str(split), "--device", "cpu",
                 "--out", str(pred)]) == 0
    assert {p["image_id"] for p in json.loads(pred.read_text())} <= set(subsets["test"])
    assert main(["score", "--gt", str(data), "--split", str(split), "--subset", "test", "--pred", str(pred),
                 "--out", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    assert len(result["ap_seg"]) == 10 and all(0 <= v <= 1 for v in result["ap_seg"])
    # watershed finds these synthetic nuclei (RGB, or the two 16-bit channels padded to RGB): measured APseg
    # 0.24-0.26, AP@0.5 0.39-0.49 on the two test images
    assert result["ap_seg"][0] > 0.3 and 0.1 < result["ap_seg_mean"] <= 1
    assert result["ap_seg"][0] >= result["ap_seg"][-1]


def test_seeded_split_reruns_agree_and_split_files_name_image_files(folders, tmp_path):
    _, data, expected = folders["cellpose"]
    again = tmp_path / "again.json"
    assert main(["split", "--data", str(data), "--spec", '{"kind": "seeded", "fractions": [0.6, 0.2, 0.2], '
                 '"seed": 0}', "--out", str(again)]) == 0
    assert again.read_text() == (data / "split.json").read_text()
    lists = tmp_path / "lists"
    lists.mkdir()
    ids = sorted(expected)  # ids are the image files' names without extension, e.g. nuclei_0001_img
    names = {"train": ids[:6], "val": ids[6:8], "test": ids[8:]}
    for subset, chosen in names.items():  # lists of the image files' names, as a user would write them
        (lists / f"{subset}.txt").write_text("".join(f"{i}{'.png' if i.endswith('_img') else '.tif'}\n"
                                                     for i in chosen))
    out = tmp_path / "split.json"
    assert main(["split", "--data", str(data), "--spec", json.dumps({"kind": "files", "folder": str(lists)}),
                 "--out", str(out)]) == 0
    assert {k: read_split(out)[k] for k in names} == names


def test_config_defaults_give_a_seeded_60_20_20_split_with_seed_0(tmp_path):
    config = validate_config({"datasets": {"my-cells": {"source": "folder", "options": {"path": str(tmp_path)}}},
                              "methods": {"watershed": {}}})
    assert config["datasets"]["my-cells"]["split"] == {"kind": "seeded", "fractions": [0.6, 0.2, 0.2], "seed": 0,
                                                       "group_by": "plant"}


# ---------------------------------------------------------------------------------------------- channels


def test_channel_first_16bit_stack_is_normalised_per_channel_and_padded(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.zeros((12, 16), np.uint16)
    labels[2:6, 3:8] = 1
    stack = np.stack([rng.integers(0, 4000, (12, 16)), rng.integers(30000, 65535, (12, 16))]).astype(np.uint16)
    save_tif(tmp_path / "cells" / "a.tif", stack)
    save_tif(tmp_path / "cells" / "a_masks.tif", labels)
    convert({"source": "folder", "options": {"path": str(tmp_path / "cells"), "layout": "cellpose"}}, tmp_path / "o")
    image = read_image(tmp_path / "o" / "images" / "a.png")
    assert image.shape == (12, 16, 3) and not image[..., 2].any()
    assert np.array_equal(image[..., 0], to_uint8(stack[0])) and np.array_equal(image[..., 1], to_uint8(stack[1]))
    # each channel spans 0..255 on its own: a joint rescale would have left channel 0 nearly black
    assert image[..., 0].max() == 255 and image[..., 0].min() == 0


def test_channels_option_picks_channels_of_a_float_channel_last_image(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.zeros((10, 12), np.uint8)
    labels[1:5, 1:5] = 3
    pixels = rng.normal(0, 1, (10, 12, 4)).astype(np.float32)
    save_tif(tmp_path / "f" / "images" / "x.tif", pixels, photometric="rgb", extrasamples=["unspecified"])
    save_png(tmp_path / "f" / "labels" / "x.png", labels)
    spec = {"source": "folder", "options": {"path": str(tmp_path / "f"), "channels": [3]}}
    manifest = convert(spec, tmp_path / "o")
    assert np.array_equal(read_image(tmp_path / "o" / "images" / "x.png"), to_uint8(pixels[..., 3]))
    assert manifest["channels"]["output"] == {"gray": 1, "rgb": 0} and manifest["channels"]["kept"] == [3]
    assert sorted(np.unique(read_label_map(tmp_path / "o" / "labels" / "x.png"))) == [0, 3]  # ids kept
    spec["options"]["channels"] = [4]
    with pytest.raises(DataError, match=r"x\.tif: has 4 channels but options.channels \[4\] asks for channel 4"):
        convert(spec, tmp_path / "o2")


def test_a_z_stack_is_refused_not_read_as_channels(tmp_path):
    save_tif(tmp_path / "z" / "images" / "s.tif", np.zeros((3, 10, 10), np.uint16), imagej=True,
             metadata={"axes": "ZYX"})
    save_png(tmp_path / "z" / "labels" / "s.png", np.ones((10, 10), np.uint8))
    with pytest.raises(DataError, match=r"s\.tif: a z-stack .*expected one 2-D frame per file.*layout canonical"):
        convert({"source": "folder", "options": {"path": str(tmp_path / "z")}}, tmp_path / "o")


# ---------------------------------------------------------------------------------------------- COCO specifics


def test_coco_polygons_and_overlaps_later_annotation_wins(tmp_path):
    save_png(tmp_path / "c" / "a.png", np.full((20, 24), 100, np.uint8))
    square = np.zeros((20, 24), bool)
    square[2:12, 2:12] = True
    coco = {"images": [{"id": 7, "file_name": "a.png", "height": 20, "width": 24}],
            "annotations": [{"id": 1, "image_id": 7, "iscrowd": 0, "segmentation": encode_mask(square)},
                            {"id": 2, "image_id": 7, "iscrowd": 0,
                             "segmentation": [[8.0, 8.0, 20.0, 8.0, 20.0, 18.0, 8.0, 18.0]]}]}
    (tmp_path / "c" / "annotations.json").write_text(json.dumps(coco))
    manifest = convert({"source": "folder", "options": {"path": str(tmp_path / "c"), "layout": "coco"}},
                       tmp_path / "o")
    labels = read_label_map(tmp_path / "o" / "labels" / "a.png")
    assert manifest["objects"] == 2 and labels[10, 10] == 2 and labels[3, 3] == 1  # the polygon (later) wins
    assert labels[15, 15] == 2 and manifest["coco"]["overlap_pixels"] == int((square & (labels == 2)).sum()) > 0


def test_coco_bad_segmentations_name_the_annotation(tmp_path):
    root = tmp_path / "c"
    save_png(root / "a.png", np.zeros((6, 8), np.uint8))
    for seg, why in (({"size": [6, 8], "counts": "42"}, r"RLE counts sum to 6 pixels but its size 6x8 has 48"),
                     ({"size": [8, 6], "counts": [48]}, r"RLE of size \[8, 6\] on an image of 6x8"),
                     ({"size": [6, 8], "counts": [3, 4]}, r"uncompressed RLE counts must be .* summing to 48"),
                     ([[1, 1, 2, 2]], r"a polygon must be a list of at least three x, y pairs")):
        coco = {"images": [{"id": 1, "file_name": "a.png"}],
                "annotations": [{"id": 5, "image_id": 1, "segmentation": seg}]}
        (root / "annotations.json").write_text(json.dumps(coco))
        with pytest.raises(DataError, match=r"annotations\.json: annotations\[0\] \(id 5, image 'a\.png'\).*" + why):
            convert({"source": "folder", "options": {"path": str(root), "layout": "coco"}}, tmp_path / "o")


def test_coco_json_naming_a_missing_image_names_the_file_and_the_layout(tmp_path):
    root = tmp_path / "c"
    save_png(root / "a.png", np.zeros((8, 8), np.uint8))
    coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "sub/b.png"}], "annotations": []}
    (root / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"annotations\.json: image id 2 has file_name 'sub/b\.png', but .*sub/b\.png "
                                        r"does not exist; expected file_name relative to .*layout coco: "):
        convert({"source": "folder", "options": {"path": str(root), "layout": "coco"}}, tmp_path / "o")


# ---------------------------------------------------------------------------------------------- bad folders


def canonical_pair(root: Path, name: str, shape=(10, 12), label_shape=None) -> None:
    save_png(root / "images" / f"{name}.png", np.full(shape, 50, np.uint8))
    labels = np.zeros(label_shape or shape, np.uint16)
    labels[1:4, 1:4] = 1
    save_png(root / "labels" / f"{name}.png", labels)


def test_image_without_mask_names_the_image_and_the_expected_mask(tmp_path):
    root = tmp_path / "d"
    canonical_pair(root, "good")
    save_png(root / "images" / "lonely.tif", np.zeros((10, 12), np.uint16))
    with pytest.raises(DataError) as err:
        convert({"source": "folder", "options": {"path": str(root)}}, tmp_path / "o")
    message = str(err.value)
    assert message.startswith(f"{root / 'images' / 'lonely.tif'}: image without a label map; expected "
                               f"{root / 'labels' / 'lonely'}.png or .tif")
    assert "layout canonical: <path>/images/<name>.<ext>" in message

    cells = tmp_path / "cp"
    save_tif(cells / "x_img.tif", np.zeros((6, 6), np.uint8))
    with pytest.raises(DataError, match=r"x_img\.tif: image without a mask; expected .*/x_masks\.tif or \.png "
                                        r"beside it \(layout cellpose: one flat folder of <name>\.tif"):
        convert({"source": "folder", "options": {"path": str(cells), "layout": "cellpose"}}, tmp_path / "o")


def test_mask_without_image_says_which(tmp_path):
    cells = tmp_path / "cp"
    save_png(cells / "a.png", np.zeros((6, 6), np.uint8))
    save_png(cells / "a_masks.png", np.ones((6, 6), np.uint8))
    save_png(cells / "b_masks.png", np.ones((6, 6), np.uint8))
    with pytest.raises(DataError, match=r"b_masks\.png: mask without an image; expected .*/b\.tif \(or b_img\.tif; "
                                        r"\.png, \.\.\.\) beside it \(layout cellpose"):
        convert({"source": "folder", "options": {"path": str(cells), "layout": "cellpose"}}, tmp_path / "o")
    root = tmp_path / "d"
    canonical_pair(root, "good")
    save_png(root / "labels" / "orphan.png", np.ones((10, 12), np.uint8))
    with pytest.raises(DataError, match=r"labels/orphan\.png: label map \(mask\) without an image; expected "
                                        r".*images/orphan\.png .*layout canonical"):
        convert({"source": "folder", "options": {"path": str(root)}}, tmp_path / "o")


def test_mask_of_another_size_names_both_files_and_the_layout(tmp_path):
    cells = tmp_path / "cp"
    save_tif(cells / "a.tif", np.zeros((10, 12), np.uint16))
    save_tif(cells / "a_masks.tif", np.ones((10, 11), np.uint16))
    with pytest.raises(DataError, match=r"a_masks\.tif: label image is 10x11 but its image .*a\.tif is 10x12; "
                                        r"expected the same size \[layout cellpose: "):
        convert({"source": "folder", "options": {"path": str(cells), "layout": "cellpose"}}, tmp_path / "o")


def test_empty_folders_name_the_folder_and_the_layout(tmp_path):
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "labels").mkdir()
    with pytest.raises(DataError, match=r"/e: no image and no label map found \(an empty folder\?\); expected "
                                        r"layout canonical: <path>/images/"):
        convert({"source": "folder", "options": {"path": str(tmp_path / "e")}}, tmp_path / "o")
    with pytest.raises(DataError, match=r"/e: no image and no mask found .*layout cellpose"):
        convert({"source": "folder", "options": {"path": str(tmp_path / "e"), "layout": "cellpose"}}, tmp_path / "o")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match=r"/flat: no images/ and no labels/ folder; expected layout canonical"):
        convert({"source": "folder", "options": {"path": str(tmp_path / "flat")}}, tmp_path / "o")


def test_unknown_layout_is_a_config_error_naming_the_option_and_the_choices(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"options\.layout: 'ilastik' is not a known folder layout; expected one "
                                          r"of canonical, cellpose, coco"):
        validate_config({"datasets": {"mine": {"source": "folder", "options": {"path": "x", "layout": "ilastik"}}},
                         "methods": {"watershed": {}}})
    spec = {"source": "folder", "options": {"path": str(tmp_path), "layout": "ilastik"}}
    assert main(["convert", "--spec", json.dumps(spec), "--out", str(tmp_path / "o")]) == 2
    assert "options.layout: 'ilastik'" in capsys.readouterr().err


def test_unreadable_image_names_the_file_and_a_failed_conversion_keeps_the_earlier_one(tmp_path):
    root = tmp_path / "d"
    canonical_pair(root, "a")
    spec = {"source": "folder", "options": {"path": str(root)}}
    convert(spec, tmp_path / "o")
    canonical_pair(root, "b")
    (root / "images" / "b.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match=r"images/b\.png: cannot be read as an image .*\[layout canonical"):
        convert(spec, tmp_path / "o")
    assert sorted(p.name for p in (tmp_path / "o" / "images").iterdir()) == ["a.png"]


def test_absent_path_makes_the_dataset_unavailable_with_the_layout_expected(tmp_path):
    why = unavailable_reason("folder", {"path": str(tmp_path / "nowhere"), "layout": "cellpose"})
    assert f"options.path '{tmp_path / 'nowhere'}' does not exist" in why
    assert "layout 'cellpose': one flat folder of <name>.tif" in why and "datasets/folder.yaml" in why
    assert "options.path is not set" in unavailable_reason("folder", {})
    assert unavailable_reason("folder", {"path": str(tmp_path)}) is None


# ---------------------------------------------------------------------------------------------- card, example config


def test_card_agrees_with_the_source_defaults():
    import dataclasses

    from objguided.data.sources import get_source

    card = yaml.safe_load((REPO / "datasets" / "folder.yaml").read_text())
    assert card["name"] == "folder" and card["converter"]["source"] == "folder"
    for key in ("title", "description", "licence", "sources", "split", "normalisation"):
        assert card.get(key), key
    fields = dataclasses.fields(get_source("folder").Options)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory() for f in fields}
    assert card["converter"]["options"] == defaults
    assert card["split"]["kind"] == "seeded" and card["split"]["fractions"] == [0.6, 0.2, 0.2]


def test_the_commented_example_in_user_data_config_is_a_valid_dataset(tmp_path):
    text = (REPO / "config" / "user-data.example.yaml").read_text().splitlines()
    start = next(k for k, line in enumerate(text) if line.strip() == "# my-cells:")
    block = []
    for line in text[start:]:
        if not line.strip().startswith("#"):
            break
        block.append(line.replace("# ", "", 1))
    entry = yaml.safe_load("\n".join(block))
    assert entry["my-cells"]["source"] == "folder"
    entry["my-cells"]["options"]["path"] = str(tmp_path)
    config = validate_config({"datasets": entry, "methods": {"watershed": {}}})
    assert config["datasets"]["my-cells"]["split"]["kind"] == "seeded"
