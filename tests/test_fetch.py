"""objguided.data.fetch: file:// and http:// downloads, resume, retries, the sha256 lock, mismatches."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest

from objguided.data.fetch import download, local_path, lock_path, read_lock
from objguided.errors import ConfigError, DataError

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
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload, httpd.requests, httpd.ranges, httpd.fail_next, httpd.cut_next = PAYLOAD, [], True, 0, 0
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
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError, match=r"download failed after 2 attempts .*next `objguided fetch` resumes"):
        fetch(f"http://127.0.0.1:{port}/payload.bin", tmp_path, retries=1, timeout=5)
    assert not (tmp_path / "payload.bin").exists()
