"""The canonical format's readers reject bad input with an error naming the file and the problem."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from objguided.data.canonical import (
    CanonicalDataset,
    read_image,
    read_label_map,
    read_split,
    write_label_map,
    write_sample,
)
from objguided.errors import DataError


def _sample(h=20, w=30):
    image = np.zeros((h, w, 3), np.uint8)
    labels = np.zeros((h, w), np.int32)
    labels[2:8, 3:9] = 1
    labels[10:15, 12:20] = 2
    image[labels > 0] = 200
    return image, labels


def test_round_trip(tmp_path):
    image, labels = _sample()
    write_sample(tmp_path, "a", image, labels)
    ds = CanonicalDataset(tmp_path)
    assert ds.ids == ["a"]
    sample = ds[0]
    np.testing.assert_array_equal(sample.image, image)
    np.testing.assert_array_equal(sample.labels, labels)
    assert Image.open(tmp_path / "labels" / "a.png").mode.startswith("I")  # stored as 16-bit


def test_rgba_drops_alpha_and_16bit_is_rescaled(tmp_path):
    rgba = np.full((4, 5, 4), 7, np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png").shape == (4, 5, 3)
    deep = np.arange(20, dtype=np.uint16).reshape(4, 5) * 1000
    tifffile.imwrite(tmp_path / "deep.tif", deep)
    img = read_image(tmp_path / "deep.tif")
    assert img.dtype == np.uint8 and img.min() == 0 and img.max() == 255


def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match=r"broken\.png: cannot be read as an image"):
        read_image(bad)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.png: file not found"):
        read_image(tmp_path / "nothere.png")


def test_label_map_of_another_size_is_rejected(tmp_path):
    image, labels = _sample()
    write_sample(tmp_path, "a", image, labels)
    write_label_map(tmp_path / "labels" / "a.png", labels[:10])
    with pytest.raises(DataError, match=r"a\.png: label map is 10x30 but its image is 20x30"):
        CanonicalDataset(tmp_path)[0]


def test_non_integer_label_map_is_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "float.tif", np.array([[0.0, 1.5], [2.0, 0.0]], np.float32))
    with pytest.raises(DataError, match=r"float\.tif: label map of type float32 holds non-integer values"):
        read_label_map(tmp_path / "float.tif")
    tifffile.imwrite(tmp_path / "whole.tif", np.array([[0.0, 1.0], [2.0, 0.0]], np.float32))
    assert read_label_map(tmp_path / "whole.tif").tolist() == [[0, 1], [2, 0]]


def test_color_label_map_is_rejected(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png: label map of shape \(4, 4, 3\)"):
        read_label_map(tmp_path / "rgb.png")


def test_split_subset_and_bad_split(tmp_path):
    image, labels = _sample()
    for name in ("a", "b", "c"):
        write_sample(tmp_path, name, image, labels)
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["c"]}))
    assert CanonicalDataset(tmp_path, "val").ids == ["b"]
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"], "val": ["a"], "test": ["c"]}))
    with pytest.raises(DataError, match="image 'a' is in both 'train' and 'val'"):
        read_split(tmp_path / "split.json")
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["zz"]}))
    with pytest.raises(DataError, match="first: zz"):
        CanonicalDataset(tmp_path, "test")


def test_not_a_dataset_folder(tmp_path):
    with pytest.raises(DataError, match="run `objguided convert` first"):
        CanonicalDataset(tmp_path)
