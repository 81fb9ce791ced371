"""`objguided predict --speed-out` states in its log (the DAG's predict.log) the FPS it measured, and the
speed record's device (the report's FPS column) names the device and the CPU thread count."""

import json
import logging

from objguided.cli import main

SPEC = {"source": "synthetic", "options": {"generator": "nuclei", "n_images": 6, "image_size": 48, "seed": 5}}


def test_predict_log_states_fps_device_and_threads(tmp_path, caplog):
    import torch

    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["convert", "--spec", json.dumps(SPEC), "--out", str(data)]) == 0
    assert main(["split", "--data", str(data), "--spec", '{"kind": "seeded", "fractions": [0.5, 0.17, 0.33], '
                 '"seed": 1}', "--out", str(data / "split.json")]) == 0
    assert main(["train", "--method", "watershed", "--data", str(data), "--split", str(data / "split.json"),
                 "--seed", "0", "--device", "cpu", "--out", str(run / "model.pt")]) == 0
    with caplog.at_level(logging.INFO, logger="objguided"):
        assert main(["predict", "--model", str(run / "model.pt"), "--data", str(data), "--device", "cpu",
                     "--out", str(run / "predictions.json"), "--speed-out", str(run / "speed.json")]) == 0
    speed = json.loads((run / "speed.json").read_text())
    threads = torch.get_num_threads()
    assert speed["cpu_threads"] == threads and speed["device"].endswith(f", {threads} CPU threads")
    line = next(r.getMessage() for r in caplog.records if "FPS" in r.getMessage())
    assert f"{speed['fps']:.3f} FPS on {speed['device']}" in line
    assert f"{speed['n_images']} images timed, first dropped" in line
