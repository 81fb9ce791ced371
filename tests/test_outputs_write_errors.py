"""A full disk or a read-only output folder is one clear line naming the path (issue 16), never a raw
traceback nor PyTorch's "enforce fail"; `predict` finds out before its inference pass, not after it.

Tests run as root, where chmod does not stop a write: the refusals are simulated by monkeypatching the
calls that write (the same errno values and texts the system and PyTorch give).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
from pathlib import Path

import pytest

from objguided.cli import main
from objguided.engine import atomic
from objguided.engine.atomic import write_json
from objguided.errors import ObjguidedError

SPEC = {"source": "synthetic", "options": {"generator": "nuclei", "n_images": 8, "image_size": 48, "seed": 5}}
TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"  # torch.save onto /dev/full
TORCH_WRITER = "PytorchStreamWriter failed writing file data/0: file write failed"
ADVICE_FULL = "free some space or write the outputs elsewhere, then re-run"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A converted, split dataset and a trained watershed model."""
    root = tmp_path_factory.mktemp("outputs")
    data = root / "data"
    assert main(["convert", "--spec", json.dumps(SPEC), "--out", str(data)]) == 0
    assert main(["split", "--data", str(data), "--spec", '{"kind": "seeded", "fractions": [0.5, 0.25, 0.25]}',
                 "--out", str(data / "split.json")]) == 0
    model = root / "model.pt"
    assert main(["train", "--method", "watershed", "--data", str(data), "--split", str(data / "split.json"),
                 "--device", "cpu", "--out", str(model)]) == 0
    return data, model


def _inside(path, folder: Path) -> bool:
    try:
        p = os.path.abspath(os.fspath(path))
    except TypeError:  # a file descriptor
        return False
    return p == str(folder) or p.startswith(str(folder) + os.sep)


def read_only(monkeypatch, folder: Path) -> None:
    """Every write, create or mkdir under ``folder`` fails with EROFS, as on a read-only mount."""
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def deny(p):
        raise OSError(errno.EROFS, "Read-only file system", os.fspath(p))

    def fake_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and _inside(file, folder):
            deny(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _inside(path, folder):
            deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if _inside(path, folder):
            deny(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def full_writes(monkeypatch, code: int = errno.ENOSPC, folder: Path | None = None) -> None:
    """Path.write_text / write_bytes (what the writers of JSON and text use, before and after the fix) fail
    with ``code``, for every path or only for those under ``folder``."""
    for name in ("write_text", "write_bytes"):
        real = getattr(Path, name)

        def refuse(self, data, *args, real=real, **kwargs):
            if folder is None or _inside(self, folder):
                raise OSError(code, os.strerror(code), str(self))
            return real(self, data, *args, **kwargs)

        monkeypatch.setattr(Path, name, refuse)


def disk_full(monkeypatch, folder: Path, free: int = 0) -> None:
    """Every write to a file under ``folder`` fails with ENOSPC (os.write: the probe; Path.write_*: the JSON
    writers); ``free``: what the file system reports free."""
    full_writes(monkeypatch, errno.ENOSPC, folder)
    real_write = os.write

    def fake_write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if _inside(target, folder):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fake_write)
    monkeypatch.setattr(atomic, "free_bytes", lambda where: free)


def no_inference(monkeypatch) -> list:
    """Record whether the inference pass started."""
    import objguided.engine.run as run

    started: list = []
    real = run._predictor

    def spy(*args, **kwargs):
        started.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "_predictor", spy)
    return started


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "enforce fail" not in err and "PytorchStreamWriter" not in err, err
    lines = [line for line in err.splitlines() if " INFO " not in line]  # the CLI's own progress log lines
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------- the one place

def test_write_json_on_a_full_disk_names_the_path_and_the_size(tmp_path, monkeypatch):
    full_writes(monkeypatch, errno.ENOSPC)
    monkeypatch.setattr(atomic, "free_bytes", lambda where: 1000)
    out = tmp_path / "metrics.json"
    with pytest.raises(ObjguidedError) as info:
        write_json(out, "x" * 2046)  # 2049 bytes with the quotes and the newline
    assert str(info.value) == (f"{out}: cannot write: no space left on the device (needs 2.0 KiB; 1000 B free in "
                               f"{tmp_path}); {ADVICE_FULL}")
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_quota_and_permission(tmp_path, monkeypatch):
    for code, text in [(errno.EDQUOT, "the disk quota is exceeded (needs 2 B; 5 B free in {d}); " + ADVICE_FULL),
                       (errno.EACCES, "permission denied in {d}; write the outputs to a folder you may write")]:
        full_writes(monkeypatch, code)
        monkeypatch.setattr(atomic, "free_bytes", lambda where: 5)
        with pytest.raises(ObjguidedError) as info:
            write_json(tmp_path / "a.json", 1)
        assert str(info.value) == f"{tmp_path / 'a.json'}: cannot write: " + text.format(d=tmp_path)


@pytest.mark.parametrize("text", [TORCH_FULL, TORCH_WRITER])
def test_torch_save_on_a_full_disk_is_no_enforce_fail(tmp_path, monkeypatch, text):
    import torch

    from objguided.engine.run import save_model

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"\0" * 704)  # what fitted before the disk filled
        raise RuntimeError(text)

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(atomic, "free_bytes", lambda where: 0)
    out = tmp_path / "run" / "model.pt"
    with pytest.raises(ObjguidedError) as info:
        save_model(out, {"format": "x"})
    assert str(info.value) == (f"{out}: cannot write: no space left on the device (704 B free in {out.parent}); "
                               f"{ADVICE_FULL}")
    assert list(out.parent.iterdir()) == []
    # the same error with plenty of room: not called a full disk, still one line without PyTorch's text
    monkeypatch.setattr(atomic, "free_bytes", lambda where: 50 * 2**30)
    with pytest.raises(ObjguidedError) as info:
        save_model(out, {"format": "x"})
    assert str(info.value) == (f"{out}: cannot write: the write failed part-way through (50.0 GiB free in "
                               f"{out.parent}); check the disk, then re-run")


def test_other_errors_pass_through(tmp_path, monkeypatch):
    def broken(self, data, *args, **kwargs):
        raise RuntimeError("a bug, not the disk")

    monkeypatch.setattr(Path, "write_bytes", broken)
    monkeypatch.setattr(Path, "write_text", broken)
    with pytest.raises(RuntimeError, match="a bug, not the disk"):
        write_json(tmp_path / "a.json", 1)


def test_check_writable_probes_and_leaves_nothing(tmp_path, monkeypatch):
    from objguided.engine.atomic import check_writable

    out = tmp_path / "new" / "predictions.json"
    check_writable(out)
    assert list(out.parent.iterdir()) == []
    disk_full(monkeypatch, out.parent, free=0)
    with pytest.raises(ObjguidedError) as info:
        check_writable(out)
    assert str(info.value) == (f"{out}: cannot write: no space left on the device (0 B free in {out.parent}); "
                               f"{ADVICE_FULL}")
    assert list(out.parent.iterdir()) == []


# ------------------------------------------------------------------------------------- through the CLI

def test_cli_train_on_a_full_disk(tiny, tmp_path, monkeypatch, capsys):
    import torch

    data, _ = tiny

    def full(obj, f, *args, **kwargs):
        raise RuntimeError(TORCH_FULL)

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(atomic, "free_bytes", lambda where: 0)
    out = tmp_path / "run" / "model.pt"
    assert main(["train", "--method", "watershed", "--data", str(data), "--split", str(data / "split.json"),
                 "--device", "cpu", "--out", str(out)]) == 2
    assert one_line(capsys) == (f"objguided train: error: {out}: cannot write: no space left on the device "
                                f"(0 B free in {out.parent}); {ADVICE_FULL}")
    assert not out.exists()


def test_cli_split_on_a_full_disk(tiny, tmp_path, monkeypatch, capsys):
    data, _ = tiny
    full_writes(monkeypatch, errno.ENOSPC)
    monkeypatch.setattr(atomic, "free_bytes", lambda where: 0)
    out = tmp_path / "split.json"
    assert main(["split", "--data", str(data), "--out", str(out)]) == 2
    line = one_line(capsys)
    assert line.startswith(f"objguided split: error: {out}: cannot write: no space left on the device (needs ")
    assert line.endswith(f" B; 0 B free in {tmp_path}); {ADVICE_FULL}")


def test_cli_predict_read_only_fails_before_inference(tiny, tmp_path, monkeypatch, capsys):
    data, model = tiny
    started = no_inference(monkeypatch)
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    out = tmp_path / "ro" / "run" / "predictions.json"
    assert main(["predict", "--model", str(model), "--data", str(data), "--device", "cpu", "--out", str(out),
                 "--speed-out", str(out.with_name("speed.json"))]) == 2
    assert one_line(capsys) == (f"objguided predict: error: {out}: cannot write: {tmp_path / 'ro'} is on a "
                                "read-only file system; write the outputs to a writable folder")
    assert not started  # the inference pass never began


def test_cli_predict_speed_file_on_a_full_disk_fails_before_inference(tiny, tmp_path, monkeypatch, capsys):
    data, model = tiny
    started = no_inference(monkeypatch)
    (tmp_path / "full").mkdir()
    disk_full(monkeypatch, tmp_path / "full", free=0)
    out = tmp_path / "run" / "predictions.json"
    speed = tmp_path / "full" / "speed.json"
    assert main(["predict", "--model", str(model), "--data", str(data), "--device", "cpu", "--out", str(out),
                 "--speed-out", str(speed)]) == 2
    assert one_line(capsys) == (f"objguided predict: error: {speed}: cannot write: no space left on the device "
                                f"(0 B free in {tmp_path / 'full'}); {ADVICE_FULL}")
    assert not started and not out.exists()


def test_cli_time_and_score_read_only_fail_before_their_pass(tiny, tmp_path, monkeypatch, capsys):
    import objguided.metrics.score as score

    data, model = tiny
    pred = tmp_path / "predictions.json"
    assert main(["predict", "--model", str(model), "--data", str(data), "--device", "cpu", "--out", str(pred)]) == 0
    capsys.readouterr()
    started = no_inference(monkeypatch)
    scored: list = []
    monkeypatch.setattr(score, "score_predictions", lambda *a, **k: scored.append(True) or {})
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    out = tmp_path / "ro" / "speed.json"
    assert main(["time", "--model", str(model), "--data", str(data), "--device", "cpu", "--out", str(out)]) == 2
    assert one_line(capsys) == (f"objguided time: error: {out}: cannot write: {tmp_path / 'ro'} is on a read-only "
                                "file system; write the outputs to a writable folder")
    out = tmp_path / "ro" / "metrics.json"
    assert main(["score", "--gt", str(data), "--pred", str(pred), "--out", str(out)]) == 2
    assert one_line(capsys) == (f"objguided score: error: {out}: cannot write: {tmp_path / 'ro'} is on a "
                                "read-only file system; write the outputs to a writable folder")
    assert not started and not scored


def test_cli_report_arguments(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "spec.json"
    assert main(["report", "--runs", str(missing), "--out", str(tmp_path / "report")]) == 2
    assert one_line(capsys) == (f"objguided report: error: --runs {missing}: cannot read the report spec "
                                "(No such file or directory)")
    missing.write_text("{not json")
    assert main(["report", "--runs", str(missing), "--out", str(tmp_path / "report")]) == 2
    assert one_line(capsys).startswith(f"objguided report: error: --runs {missing}: the report spec is not valid JSON")
    missing.write_text(json.dumps({"runs": [], "paper_table1": None, "note": None}))
    read_only(monkeypatch, tmp_path / "report")
    assert main(["report", "--runs", str(missing), "--out", str(tmp_path / "report")]) == 2
    assert one_line(capsys) == (f"objguided report: error: {tmp_path / 'report' / 'report.html'}: cannot write: "
                                f"{tmp_path} is on a read-only file system; write the outputs to a writable folder")


def test_cli_stray_os_write_error_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    """A write outside objguided.engine.atomic (a library's own file) on a full disk: still one line."""
    import objguided.engine.run as run

    data, model = tiny

    def stray(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache.bin"))

    monkeypatch.setattr(run, "time_run", stray)
    monkeypatch.setattr(atomic, "free_bytes", lambda where: 0)
    assert main(["time", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "s.json")]) == 2
    assert one_line(capsys) == (f"objguided time: error: {tmp_path / 'cache.bin'}: cannot write: no space left on "
                                f"the device (0 B free in {tmp_path}); {ADVICE_FULL}")
    monkeypatch.setattr(run, "time_run", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EACCES, "Permission denied", "/etc/x")))  # may be a read: not called a write error
    with pytest.raises(PermissionError):
        main(["time", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "s.json")])
