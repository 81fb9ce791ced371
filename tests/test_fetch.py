"""objguided.data.fetch: file:// and http:// downloads, resume, retries, the sha256 lock, mismatches."""

from __future__ import annotations

import errno
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

import objguided.data.fetch as fetch_module
from objguided.data.fetch import download, local_path, lock_path, read_lock, source_default_hashes
from objguided.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "tests" / "data" / "dsb2018_mini.zip"

PAYLOAD = os.urandom(300_000)
OTHER = os.urandom(300_000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------- server


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        server = self.server
        server.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if self.path != "/data/payload.bin":
            self.send_error(404)
            return
        if server.fail_next > 0:
            server.fail_next -= 1
            self.send_error(503, "try later")
            return
        data = server.payload
        start = 0
        rng = self.headers.get("Range")
        if rng and server.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_next > 0:  # promise the whole body, send part of it, hang up
            server.cut_next -= 1
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        step = 16 * 1024 if server.delay else len(body) or 1
        for at in range(0, len(body), step):  # a slow server: one 16 KiB piece per `delay` seconds
            self.wfile.write(body[at: at + step])
            self.wfile.flush()
            time.sleep(server.delay)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload, httpd.requests, httpd.ranges, httpd.fail_next, httpd.cut_next = PAYLOAD, [], True, 0, 0
    httpd.delay = 0.0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/data/payload.bin"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def fetch(url, raw, **kw):
    kw.setdefault("backoff", 0)
    kw.setdefault("progress", False)
    return download(url, raw, **kw)


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "mirror" / "payload.bin"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


# ---------------------------------------------------------------------------------------------- file://


def test_file_url_download_records_lock_then_skips(src, tmp_path):
    raw = tmp_path / "raw"
    record = fetch(f"file://{src}", raw)
    dest = raw / "payload.bin"
    assert dest.read_bytes() == PAYLOAD
    assert record["sha256"] == sha(PAYLOAD) and record["size"] == len(PAYLOAD) and record["downloaded"]
    assert record["verified_by"] == "first download: lock recorded"
    assert read_lock(dest) == sha(PAYLOAD)
    assert lock_path(dest).read_text() == f"{sha(PAYLOAD)}  payload.bin\n"  # sha256sum -c format
    assert not (raw / "payload.bin.part").exists()

    src.write_bytes(OTHER)  # the source changes, but a verified copy is here: nothing is downloaded
    again = fetch(f"file://{src}", raw)
    assert not again["downloaded"] and again["verified_by"] == "lock file"
    assert dest.read_bytes() == PAYLOAD


def test_relative_file_urls_are_taken_from_the_working_directory(src, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_path("file://mirror/payload.bin") == Path("mirror/payload.bin")
    assert fetch("file://mirror/payload.bin", tmp_path / "a")["sha256"] == sha(PAYLOAD)
    assert fetch("file:mirror/payload.bin", tmp_path / "b")["sha256"] == sha(PAYLOAD)
    monkeypatch.setenv("OBJG_TEST_MIRROR", str(tmp_path / "mirror"))
    assert fetch("file://$OBJG_TEST_MIRROR/payload.bin", tmp_path / "c")["sha256"] == sha(PAYLOAD)


def test_missing_local_file_names_the_path_and_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"nowhere/x\.zip: file not found .*current directory"):
        fetch("file://nowhere/x.zip", tmp_path / "raw")
    assert not (tmp_path / "raw" / "x.zip").exists()


def test_file_url_resumes_a_partial_file(src, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "payload.bin.part").write_bytes(PAYLOAD[:100_000])
    record = fetch(f"file://{src}", raw, sha256=[sha(PAYLOAD)])
    assert (raw / "payload.bin").read_bytes() == PAYLOAD and record["verified_by"] == "sha256 listed in the card"


def test_bad_urls_and_hashes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not an http://, https:// or file:// URL"):
        fetch("ftp://example.org/a.zip", tmp_path)
    with pytest.raises(ConfigError, match="does not end with a file name"):
        fetch("https://example.org/", tmp_path)
    with pytest.raises(ConfigError, match="not a sha256"):
        fetch("file:///x/a.zip", tmp_path, sha256=["abc"])


# ---------------------------------------------------------------------------------------------- http://


def test_http_download(server, tmp_path):
    record = fetch(server.url, tmp_path, sha256=[sha(PAYLOAD)])
    assert (tmp_path / "payload.bin").read_bytes() == PAYLOAD
    assert record["verified_by"] == "sha256 listed in the card" and record["downloaded"]
    assert not lock_path(tmp_path / "payload.bin").exists()  # a listed hash vouches: no lock needed
    assert server.requests == [{"path": "/data/payload.bin", "range": None}]


def test_http_resumes_a_truncated_partial_file_with_range(server, tmp_path):
    (tmp_path / "payload.bin.part").write_bytes(PAYLOAD[:123_456])
    fetch(server.url, tmp_path, sha256=[sha(PAYLOAD)])
    assert (tmp_path / "payload.bin").read_bytes() == PAYLOAD
    assert server.requests[-1]["range"] == "bytes=123456-"


def test_http_without_range_support_starts_again(server, tmp_path):
    server.ranges = False
    (tmp_path / "payload.bin.part").write_bytes(b"x" * 5000)  # not even a prefix: must not survive
    fetch(server.url, tmp_path, sha256=[sha(PAYLOAD)])
    assert (tmp_path / "payload.bin").read_bytes() == PAYLOAD


def test_http_partial_file_longer_than_the_file_starts_again(server, tmp_path):
    (tmp_path / "payload.bin.part").write_bytes(PAYLOAD + b"junk")
    fetch(server.url, tmp_path, sha256=[sha(PAYLOAD)])
    assert (tmp_path / "payload.bin").read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_http_retries_server_errors(server, tmp_path):
    server.fail_next = 2
    fetch(server.url, tmp_path, sha256=[sha(PAYLOAD)], retries=2)
    assert (tmp_path / "payload.bin").read_bytes() == PAYLOAD
    assert len(server.requests) == 3


def test_http_gives_up_after_the_retries(server, tmp_path):
    server.fail_next = 5
    with pytest.raises(DataError, match=r"download failed after 2 attempts \(HTTP 503"):
        fetch(server.url, tmp_path, retries=1)
    assert not (tmp_path / "payload.bin").exists()


def test_http_dropped_connection_resumes_where_it_stopped(server, tmp_path):
    server.cut_next = 1
    fetch(server.url, tmp_path, sha256=[sha(PAYLOAD)], retries=2)
    assert (tmp_path / "payload.bin").read_bytes() == PAYLOAD
    assert server.requests[0]["range"] is None
    assert server.requests[1]["range"] == f"bytes={len(PAYLOAD) // 3}-"


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(server.url.replace("payload", "missing"), tmp_path, retries=3)
    assert len(server.requests) == 1


# ---------------------------------------------------------------------------------------------- verification


def test_mismatch_against_the_lock_stops_and_keeps_the_good_file(server, tmp_path):
    fetch(server.url, tmp_path)  # first download: lock recorded
    dest = tmp_path / "payload.bin"
    assert read_lock(dest) == sha(PAYLOAD)
    server.payload = OTHER  # upstream now serves something else
    with pytest.raises(DataError) as err:
        fetch(server.url, tmp_path, force=True)
    message = str(err.value)
    assert "sha256 mismatch" in message and str(dest) in message
    assert sha(PAYLOAD) in message and sha(OTHER) in message  # expected and actual
    assert f"delete {lock_path(dest)}" in message and "left untouched" in message
    assert dest.read_bytes() == PAYLOAD and read_lock(dest) == sha(PAYLOAD)
    assert not (tmp_path / "payload.bin.part").exists()


def test_mismatch_against_the_listed_hashes(server, tmp_path):
    wanted = sha(OTHER)
    with pytest.raises(DataError, match=f"expected {wanted}, got {sha(PAYLOAD)}.*options.sha256"):
        fetch(server.url, tmp_path, sha256=[wanted], lock=False)
    assert list(tmp_path.iterdir()) == []


def test_accepted_mirror_hash_or_lock(server, tmp_path):
    """The card's (mirror's) hash and the lock are both accepted: either source may be used."""
    fetch(server.url, tmp_path)  # lock = sha(PAYLOAD)
    server.payload = OTHER
    record = fetch(server.url, tmp_path, sha256=[sha(OTHER)], force=True)
    assert record["verified_by"] == "sha256 listed in the card"
    assert (tmp_path / "payload.bin").read_bytes() == OTHER


def test_a_damaged_file_already_here_is_reported_not_replaced(src, tmp_path):
    raw = tmp_path / "raw"
    fetch(f"file://{src}", raw)
    dest = raw / "payload.bin"
    dest.write_bytes(PAYLOAD[:-1] + b"!")
    with pytest.raises(DataError, match=r"the file already here does not match.*Fix: delete"):
        fetch(f"file://{src}", raw)
    assert dest.read_bytes() == PAYLOAD[:-1] + b"!"


def test_first_download_of_the_wrong_size_is_not_locked(src, tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(DataError, match=f"{len(PAYLOAD):,} bytes .*expected 1,000"):
        fetch(f"file://{src}", raw, size=1000)
    assert not (raw / "payload.bin").exists() and not lock_path(raw / "payload.bin").exists()
    assert fetch(f"file://{src}", raw, size=len(PAYLOAD))["verified_by"] == "first download: lock recorded"


def test_a_check_can_reject_the_download(src, tmp_path):
    def reject(path):
        raise DataError(f"{path}: not a zip")

    raw = tmp_path / "raw"
    with pytest.raises(DataError, match=r"rejected and discarded \(payload.bin not written\).*not a zip"):
        fetch(f"file://{src}", raw, check=reject)
    assert list(raw.iterdir()) == []


def test_a_corrupt_lock_file_is_reported(src, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    lock_path(raw / "payload.bin").write_text("garbage\n")
    with pytest.raises(DataError, match="not a sha256 lock"):
        fetch(f"file://{src}", raw)


def test_connection_refused_is_retried_then_reported(tmp_path):
    """The message says what is true: the URL, the error, and no partial file where there is none."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/payload.bin"
    with pytest.raises(DataError) as err:
        fetch(url, tmp_path, retries=1, timeout=5)
    message = str(err.value)
    assert message.startswith(f"{url}: download failed after 2 attempts (URLError: ")
    assert "Connection refused" in message and "nothing was downloaded" in message
    assert ".part" not in message and "resumes" not in message
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_names_the_partial_file_it_kept_with_its_size(server, tmp_path):
    server.cut_next = 1  # a third of the file arrives, then the connection drops; no retry
    with pytest.raises(DataError) as err:
        fetch(server.url, tmp_path, retries=0)
    part = tmp_path / "payload.bin.part"
    assert part.stat().st_size == len(PAYLOAD) // 3
    assert f"the partial file {part} ({len(PAYLOAD) // 3:,} bytes) is kept" in str(err.value)


# ---------------------------------------------------------------------------------------------- binding sha256


def test_a_configured_sha256_is_binding_even_when_the_size_matches(server, tmp_path):
    with pytest.raises(DataError) as err:
        fetch(server.url, tmp_path, sha256=[sha(OTHER)], size=len(PAYLOAD))  # lock=True, as by default
    message = str(err.value)
    assert message.startswith(f"sha256 mismatch: {tmp_path / 'payload.bin'}: the download from {server.url}")
    assert f"expected {sha(OTHER)}, got {sha(PAYLOAD)}" in message and "binding" in message
    assert list(tmp_path.iterdir()) == []  # no file, no lock


def test_a_file_already_here_is_held_to_a_configured_sha256(src, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "payload.bin").write_bytes(PAYLOAD)  # placed by hand, never locked
    with pytest.raises(DataError, match=r"the file already here does not match: expected "
                                        f"{sha(OTHER)}, got {sha(PAYLOAD)}"):
        fetch(f"file://{src}", raw, sha256=[sha(OTHER)])
    assert not lock_path(raw / "payload.bin").exists()


def test_a_configured_sha256_is_not_overruled_by_an_old_lock(server, tmp_path):
    fetch(server.url, tmp_path)  # trust on first use: lock = sha(PAYLOAD)
    with pytest.raises(DataError, match=f"expected {sha(OTHER)}, got {sha(PAYLOAD)}"):
        fetch(server.url, tmp_path, sha256=[sha(OTHER)])


def test_a_sources_default_hash_still_allows_trust_on_first_use(server, tmp_path):
    """A source's default list (a mirror's hash, not set by the user) vouches, but does not exclude."""
    with source_default_hashes([sha(OTHER)]):
        record = fetch(server.url, tmp_path, sha256=[sha(OTHER)], size=len(PAYLOAD))
        assert record["verified_by"] == "first download: lock recorded"
        with pytest.raises(DataError, match="1,000"):  # ... and then the size must be right
            fetch(server.url, tmp_path / "b", sha256=[sha(OTHER)], size=1000)
    assert read_lock(tmp_path / "payload.bin") == sha(PAYLOAD)


def dsb_spec(url, **options):
    return {"source": "dsb2018", "options": {"url": url, "size": 0, "workers": 1, **options}}


def test_dsb2018_default_mirror_hash_is_trust_on_first_use_but_a_configured_one_binds(tmp_path):
    from objguided.data.convert import fetch as fetch_dataset
    from objguided.data.sources.dsb2018 import MIRROR_SHA256

    record = fetch_dataset(dsb_spec(f"file://{MINI}"), tmp_path / "a")  # the card's default list
    assert record["files"][0]["verified_by"] == "first download: lock recorded"
    with pytest.raises(DataError, match=f"expected {MIRROR_SHA256}, got {sha(MINI.read_bytes())}"):
        fetch_dataset(dsb_spec(f"file://{MINI}", sha256=[MIRROR_SHA256]), tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == []


# ---------------------------------------------------------------------------------------------- already here


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(20):
            zf.writestr(f"member{k}.bin", os.urandom(20_000))
    return buf.getvalue()


@pytest.fixture
def zip_src(tmp_path) -> Path:
    path = tmp_path / "mirror" / "archive.zip"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(zip_bytes())
    return path


def test_a_truncated_zip_already_here_is_refused_and_never_locked(zip_src, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    dest = raw / "archive.zip"
    dest.write_bytes(zip_src.read_bytes()[:150_000])  # an interrupted download, renamed by hand
    with pytest.raises(DataError, match=r"the file already here is damaged or incomplete"):
        fetch(f"file://{zip_src}", raw)
    assert not lock_path(dest).exists()


def test_a_truncated_dsb2018_archive_already_here_is_refused_with_size_check_off(tmp_path):
    from objguided.data.convert import fetch as fetch_dataset

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / MINI.name).write_bytes(MINI.read_bytes()[:5000])
    with pytest.raises(DataError, match="damaged or incomplete"):
        fetch_dataset(dsb_spec(f"file://{MINI}"), raw)  # size: 0, no listed hash matches
    assert sorted(p.name for p in raw.iterdir()) == [MINI.name]  # no lock, no fetched.json


def test_a_damaged_zip_locked_by_an_earlier_fetch_names_the_one_step_that_fixes_it(zip_src, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    dest = raw / "archive.zip"
    dest.write_bytes(zip_src.read_bytes()[:150_000])
    lock_path(dest).write_text(f"{sha(dest.read_bytes())}  archive.zip\n")  # what the old code recorded
    with pytest.raises(DataError) as err:
        fetch(f"file://{zip_src}", raw)
    message = str(err.value)
    step = f"rm {dest} {lock_path(dest)}"
    assert message.endswith(f"Fix: {step}, then fetch again")
    assert f"its lock {lock_path(dest)} records these same damaged bytes" in message
    subprocess.run(step.split(), check=True)  # the step, exactly as printed, and nothing else
    record = fetch(f"file://{zip_src}", raw)
    assert record["downloaded"] and dest.read_bytes() == zip_src.read_bytes()


def test_a_damaged_zip_without_a_lock_needs_only_its_own_removal(zip_src, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    dest = raw / "archive.zip"
    dest.write_bytes(zip_src.read_bytes()[:150_000])
    with pytest.raises(DataError, match=f"Fix: rm {dest}, then fetch again$"):
        fetch(f"file://{zip_src}", raw)
    dest.unlink()
    assert fetch(f"file://{zip_src}", raw)["verified_by"] == "first download: lock recorded"


def test_a_zip_download_is_checked_by_default(zip_src, tmp_path):
    bad = tmp_path / "mirror" / "cut.zip"
    bad.write_bytes(zip_src.read_bytes()[:150_000])
    with pytest.raises(DataError, match=r"rejected and discarded \(cut.zip not written\).*not a readable zip"):
        fetch(f"file://{bad}", tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []


# ---------------------------------------------------------------------------------------------- one at a time


FETCH_IN_A_PROCESS = """
import json, sys
from objguided.data.fetch import download
record = download(sys.argv[1], sys.argv[2], sha256=[sys.argv[3]], backoff=0, retries=0, progress=False)
print(json.dumps(record))
"""


def test_two_fetches_of_one_file_at_once_take_turns(server, tmp_path):
    server.delay = 0.2  # about 4 s for the payload: the second process starts well before the end
    part = tmp_path / "payload.bin.part"

    def start():
        return subprocess.Popen([sys.executable, "-c", FETCH_IN_A_PROCESS, server.url, str(tmp_path), sha(PAYLOAD)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start()
    deadline = time.monotonic() + 30
    while not part.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not part.exists():
        first.kill()
        pytest.fail(f"the first fetch never started writing: {first.communicate()}")
    second = start()  # the first is mid-download: its .part is there
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    for proc, (out, err) in zip((first, second), outputs):
        assert proc.returncode == 0, err
    records = [json.loads(out) for out, _ in outputs]
    assert [r["downloaded"] for r in records] == [True, False]  # the second found the file done
    assert "waiting for it to finish" in outputs[1][1]
    assert sha((tmp_path / "payload.bin").read_bytes()) == sha(PAYLOAD)
    assert server.requests == [{"path": "/data/payload.bin", "range": None}]  # one download, nothing appended
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.bin"]  # no .part, no lock file left


def test_a_fetch_lock_left_by_a_killed_fetch_does_not_block(src, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / ".payload.bin.fetch-lock").write_text("999999\n")  # its holder is gone: flock was released
    assert fetch(f"file://{src}", raw)["downloaded"]
    assert sorted(p.name for p in raw.iterdir()) == ["payload.bin", "payload.bin.sha256.lock"]


# ---------------------------------------------------------------------------------------------- disk full, read-only


class _Usage:
    def __init__(self, free):
        self.total, self.used, self.free = 10**12, 10**12 - free, free


def test_not_enough_free_space_stops_before_downloading(server, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(1000))
    with pytest.raises(DataError) as err:
        fetch(server.url, tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'payload.bin'}: not enough disk space to download {server.url}: it needs "
        f"{len(PAYLOAD):,} more bytes ({len(PAYLOAD):,} in all) and 1,000 are free on {tmp_path}. Fix: free "
        "space there (or fetch into another folder with --raw), then fetch again; nothing was downloaded")
    assert list(tmp_path.iterdir()) == []


def _failing_writes(monkeypatch, inside: Path, err: int, after: int = 0):
    """Files opened for writing under ``inside`` (by the fetch module) fail with ``err`` after ``after`` bytes."""
    real_open = open

    class Full(io.FileIO):
        written = 0

        def write(self, data):  # as a full disk does: what fits is written, then the write fails
            room = max(0, after - Full.written)
            Full.written += super().write(bytes(data[:room])) if room else 0
            if len(data) > room:
                raise OSError(err, os.strerror(err))
            return len(data)

    def fake_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wa+") and Path(path).resolve().is_relative_to(inside.resolve()):
            if after == 0:
                raise OSError(err, os.strerror(err), str(path))
            return Full(str(path), mode.replace("b", "").replace("+", "") or "w")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(fetch_module, "open", fake_open, raising=False)


def test_disk_full_during_the_download_is_one_clear_error(src, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    _failing_writes(monkeypatch, raw, errno.ENOSPC, after=100_000)
    with pytest.raises(DataError) as err:
        fetch(f"file://{src}", raw)
    part = raw / "payload.bin.part"
    assert str(err.value).startswith(f"{raw / 'payload.bin'}: not enough disk space to download file://{src}: "
                                     f"it needs {len(PAYLOAD) - 100_000:,} more bytes ({len(PAYLOAD):,} in all)")
    assert f"the partial file {part} (100,000 bytes) is kept" in str(err.value)
    monkeypatch.undo()  # space freed: the next fetch resumes and verifies
    assert fetch(f"file://{src}", raw, sha256=[sha(PAYLOAD)])["downloaded"]


def _read_only(monkeypatch, folder: Path, err: int = errno.EROFS):
    """Writes under ``folder`` fail with ``err`` (root ignores chmod, so the refusal is simulated)."""
    _failing_writes(monkeypatch, folder, err)
    real_os_open = os.open

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and Path(path).resolve().is_relative_to(folder.resolve()):
            raise OSError(err, os.strerror(err), str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)


@pytest.mark.parametrize("err", [errno.EROFS, errno.EACCES])
def test_a_read_only_raw_folder_is_one_clear_error(src, tmp_path, monkeypatch, err):
    raw = tmp_path / "raw"
    raw.mkdir()
    _read_only(monkeypatch, raw, err)
    with pytest.raises(DataError) as caught:
        fetch(f"file://{src}", raw)
    assert str(caught.value) == (
        f"{raw / 'payload.bin.part'}: cannot write the download of file://{src} there ({os.strerror(err)}): "
        f"the raw folder {raw} must be writable; make it writable, or fetch into another folder (--raw)")


def test_a_verified_file_in_a_read_only_raw_folder_is_still_accepted(src, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    fetch(f"file://{src}", raw)
    _read_only(monkeypatch, raw)
    record = fetch(f"file://{src}", raw)
    assert record["verified_by"] == "lock file" and not record["downloaded"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the simulated test above covers it")
def test_a_chmod_read_only_raw_folder_is_one_clear_error(src, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    raw.chmod(0o555)
    try:
        with pytest.raises(DataError, match=r"Permission denied\): the raw folder .* must be writable"):
            fetch(f"file://{src}", raw)
    finally:
        raw.chmod(0o755)
