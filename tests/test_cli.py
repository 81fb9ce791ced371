"""Every DAG step through the `objguided` command, without Snakemake, on a tiny synthetic set."""

import json

import pytest

from objguided.cli import main

SPEC = {"source": "synthetic", "options": {"generator": "nuclei", "n_images": 8, "image_size": 64, "seed": 3}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    assert main(["convert", "--spec", json.dumps(SPEC), "--out", str(data)]) == 0
    assert main(["split", "--data", str(data),
                 "--spec", '{"kind": "seeded", "fractions": [0.5, 0.25, 0.25], "seed": 1}',
                 "--out", str(data / "split.json")]) == 0
    return root, data


def test_every_verb_in_sequence(tiny, tmp_path):
    root, data = tiny
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["images"] == 8 and manifest["objects"] > 0
    split = json.loads((data / "split.json").read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [4, 2, 2]

    run = tmp_path / "run"
    assert main(["train", "--method", "watershed", "--data", str(data), "--split", str(data / "split.json"),
                 "--seed", "0", "--device", "cpu", "--out", str(run / "model.pt")]) == 0
    assert main(["predict", "--model", str(run / "model.pt"), "--data", str(data), "--device", "cpu",
                 "--out", str(run / "predictions.json"), "--speed-out", str(run / "predict_speed.json")]) == 0
    predictions = json.loads((run / "predictions.json").read_text())
    assert predictions and {p["image_id"] for p in predictions} <= set(split["test"])
    timed = json.loads((run / "predict_speed.json").read_text())  # the same pass, timed: the DAG's FPS
    assert timed["n_images"] == 1 and timed["dropped_first"] and timed["image_ids"] == split["test"][1:]
    assert timed["fps"] == pytest.approx(1 / timed["mean_seconds"]) and timed["device"].startswith("cpu")
    assert not (run / "metrics.json").exists()
    assert main(["score", "--gt", str(data), "--split", str(data / "split.json"), "--subset", "test",
                 "--pred", str(run / "predictions.json"), "--out", str(run / "metrics.json")]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["ap_seg"]) == 10 and 0 <= metrics["ap_seg_mean"] <= 1
    quality = metrics["quality"]  # the CTC and CVPPP measures ride along with the extras
    assert quality["images"] == 2 and 0 <= quality["ctc"]["seg"] <= 1 and 0 <= quality["cvppp"]["best_dice"] <= 1
    assert metrics["provenance"]["config_hash"]
    assert main(["time", "--model", str(run / "model.pt"), "--data", str(data), "--device", "cpu",
                 "--out", str(run / "speed.json")]) == 0
    speed = json.loads((run / "speed.json").read_text())
    assert speed["n_images"] == 1 and speed["fps"] > 0 and speed["dropped_first"]
    spec = {"runs": [{"dataset": "tiny", "method": "watershed", "variant": "default", "seed": 0,
                      "label": "watershed", "paper_dataset": None, "paper_method": None, "dir": str(run)}],
            "paper_table1": None, "note": None}
    assert main(["report", "--runs", json.dumps(spec), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "table1.md").read_text().count("watershed") >= 1
    assert main(["export-coco", "--data", str(data), "--out", str(tmp_path / "gt.json")]) == 0


def test_errors_are_one_clear_line(tiny, tmp_path, capsys):
    root, data = tiny
    assert main(["predict", "--model", str(tmp_path / "missing.pt"), "--data", str(data),
                 "--out", str(tmp_path / "p.json")]) == 2
    assert "missing.pt: model file not found" in capsys.readouterr().err
    assert main(["convert", "--spec", '{"source": "synthetic", "options": {"generator": "stars", "n_images": 3, '
                 '"image_size": 32}}', "--out", str(tmp_path / "d")]) == 2
    assert "stars" in capsys.readouterr().err
    assert main(["train", "--method", "no_such_method", "--data", str(data), "--split", str(data / "split.json"),
                 "--out", str(tmp_path / "m.pt")]) == 2
    assert "unknown method 'no_such_method'" in capsys.readouterr().err
    assert main(["train", "--method", "watershed", "--params", '{"bogus": 1}', "--data", str(data),
                 "--split", str(data / "split.json"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    assert main(["predict", "--model", str(tmp_path / "broken.pt"), "--data", str(data),
                 "--out", str(tmp_path / "p.json")]) == 2
    assert "cannot be read as a model file" in capsys.readouterr().err
