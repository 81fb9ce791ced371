"""objguided.data.convert: a killed conversion's staging folders are gone after the next conversion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from objguided.data.convert import convert, fetch

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "tests" / "data" / "dsb2018_mini.zip"
CONVERTED = ["images", "labels", "manifest.json"]


def spec(**options) -> dict:
    return {"source": "dsb2018", "options": {"url": f"file://{MINI}", "size": 0, "workers": 1, **options}}


@pytest.fixture
def raw(tmp_path) -> Path:
    fetch(spec(), tmp_path / "raw")
    return tmp_path / "raw"


def test_stale_staging_folders_are_removed_by_the_next_conversion(raw, tmp_path):
    out = tmp_path / "data"
    for stale in (".convert-k1ll3d", ".staging-0123456789ab"):  # dsb2018's and StagedOutput's
        (out / stale / "images").mkdir(parents=True)
        (out / stale / "images" / "half.png").write_bytes(b"\x89PNG half")
    convert(spec(), out, raw)
    assert sorted(p.name for p in out.iterdir()) == CONVERTED


# stands in for a long conversion: it stages, then hangs until it is killed
KILLED_CONVERSION = """
import sys, time
import objguided.data.sources.dsb2018 as dsb2018
from objguided.data.convert import convert

def hang(tasks, archive, stage, workers):
    (stage / "images").mkdir()
    print("staging", flush=True)
    time.sleep(600)

dsb2018._run = hang
convert({"source": "dsb2018", "options": {"url": sys.argv[1], "size": 0, "workers": 1}}, sys.argv[2], sys.argv[3])
"""


def test_a_conversion_killed_mid_way_leaves_nothing_after_the_next_one(raw, tmp_path):
    out = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CONVERSION, f"file://{MINI}", str(out), str(raw)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "staging", proc.stderr.read()
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no finally block, no cleanup: as the OOM killer or a node loss
        proc.communicate(timeout=60)
    assert list(out.glob(".convert-*")), "the killed conversion left no staging folder to clean"
    convert(spec(), out, raw)
    assert sorted(p.name for p in out.iterdir()) == CONVERTED


def test_a_second_conversion_waits_for_the_first_instead_of_removing_its_staging(raw, tmp_path):
    """A staging folder is only removed when no conversion of that folder is running."""
    out = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CONVERSION, f"file://{MINI}", str(out), str(raw)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "staging", proc.stderr.read()
        second = subprocess.Popen([sys.executable, "-c", "import sys; from objguided.data.convert import convert; "
                                   "convert({'source': 'dsb2018', 'options': {'url': sys.argv[1], 'size': 0, "
                                   "'workers': 1}}, sys.argv[2], sys.argv[3])", f"file://{MINI}", str(out), str(raw)],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        waiting = threading.Event()

        def read_stderr():
            for line in second.stderr:
                lines.append(line)
                if "waiting for it to finish" in line:
                    waiting.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        # however loaded the machine, the second finds the lock held and says it waits
        assert waiting.wait(timeout=180), "".join(lines)
        assert second.poll() is None and len(list(out.glob(".convert-*"))) == 1  # the first's is untouched
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    second.wait(timeout=180)
    reader.join(timeout=30)
    assert second.returncode == 0, "".join(lines)
    assert sorted(p.name for p in out.iterdir()) == CONVERTED
