"""Download one file into a raw-data folder: progress bar, retries, resume, sha256 verification.

One code path for every URL scheme, so a local copy (and the tests) goes through the same steps as the
real download:

- ``https://``, ``http://``: urllib. A partial download (``<file>.part``) resumes with an HTTP ``Range``
  request; a server that ignores the range (answers 200) makes it start again from zero.
- ``file:///abs/path`` (or ``file://localhost/abs/path``): a local copy, read the same way (seek = resume).
- ``file://rel/path`` and ``file:rel/path``: a path **relative to the current working directory**
  (Snakemake runs jobs in the repository root, so ``file://../shared/data/...`` names the shared
  mirror beside the checkout). ``~`` and ``$VARS`` are expanded in local paths, so
  ``file://$OBJGUIDED_SHARED/data/...`` works from anywhere.

Verification (:func:`download`): a dataset card may list accepted sha256 values (published by upstream,
or a mirror's). When nothing published vouches for the file, the sha256 of the first download is
recorded in a lock file beside it, ``<file>.sha256.lock`` (``sha256sum -c`` format, so
``cd resources/raw/<dataset> && sha256sum -c <file>.sha256.lock`` re-checks it by hand); later downloads
must then match the lock or one of the listed values. The lock lives beside the data it vouches for:
deleting the raw folder forgets both, and a lock never outlives, or travels without, its file.

Safety: the bytes go to ``<file>.part``; only a verified ``.part`` is renamed onto ``<file>``, so a failed
or mismatching download never touches good data already there. A file already present and verified is
not downloaded again.

Why not pooch for the transfer: ``pooch.retrieve`` verifies a *known* hash and downloads to a temporary
file of its own, so it can neither resume a partial download (no ``Range``) nor record a first hash. The
hashing here is the same streaming sha256 pooch uses (``pooch.file_hash``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Iterable

from tqdm import tqdm

from objguided.errors import ConfigError, DataError

log = logging.getLogger("objguided.fetch")

CHUNK = 1 << 20
LOCK_SUFFIX = ".sha256.lock"
PART_SUFFIX = ".part"
USER_AGENT = "objguided-fetch (+https://github.com/; research reproducibility harness)"


class _Retryable(Exception):
    """A transient failure (network, short read, server error): try again, resuming."""


# ---------------------------------------------------------------------------------------------- URLs


def local_path(url: str) -> Path | None:
    """The local path a ``file:`` URL names, or None for other schemes.

    >>> str(local_path("file:///data/a.zip")), str(local_path("file://localhost/data/a.zip"))
    ('/data/a.zip', '/data/a.zip')
    >>> str(local_path("file://../shared/a.zip")), str(local_path("file:rel/a.zip"))
    ('../shared/a.zip', 'rel/a.zip')
    >>> local_path("https://example.org/a.zip") is None
    True
    """
    if not url.lower().startswith("file:"):
        return None
    rest = url[len("file:"):]
    if rest.startswith("//"):
        rest = rest[2:]
        if rest.lower().startswith("localhost/"):
            rest = rest[len("localhost"):]
    path = urllib.parse.unquote(rest)
    if not path:
        raise ConfigError(f"{url}: a file: URL must name a file")
    return Path(os.path.expanduser(os.path.expandvars(path)))


def file_name(url: str) -> str:
    """The file name a URL ends with (what the download is saved as)."""
    path = local_path(url)
    name = path.name if path is not None else Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ConfigError(f"{url}: the URL does not end with a file name")
    return name


def check_url(url: str, where: str = "url") -> None:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https", "file"):
        raise ConfigError(f"{where}: '{url}' is not an http://, https:// or file:// URL")
    file_name(url)


# ---------------------------------------------------------------------------------------------- hashes


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def lock_path(dest: Path) -> Path:
    return dest.with_name(dest.name + LOCK_SUFFIX)


def read_lock(dest: Path) -> str | None:
    """The sha256 recorded for ``dest`` by its first download, or None."""
    path = lock_path(dest)
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            value = line.split()[0].lower()
            if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
                return value
            break
    raise DataError(f"{path}: not a sha256 lock (expected a line '<64 hex digits>  {dest.name}'); "
                    "delete it to record the hash of the next download")


def write_lock(dest: Path, sha256: str) -> None:
    from objguided.engine.atomic import write_text

    write_text(lock_path(dest), f"{sha256}  {dest.name}\n")


def _normalise(values: Iterable[str], where: str) -> list[str]:
    out = []
    for value in values:
        value = str(value).strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ConfigError(f"{where}: '{value}' is not a sha256 (64 hex digits)")
        out.append(value)
    return out


# ---------------------------------------------------------------------------------------------- transfer


_NETWORK_ERRORS = (socket.timeout, ConnectionError, HTTPException, urllib.error.URLError)


def _copy_stream(src, out, bar: tqdm) -> int:
    """Copy ``src`` to ``out``; a failed read (network) is retryable, a failed write (disk) is not."""
    copied = 0
    while True:
        try:
            block = src.read(CHUNK)
        except _NETWORK_ERRORS as exc:
            raise _Retryable(f"connection lost at byte {bar.n}: {exc}") from exc
        if not block:
            return copied
        out.write(block)
        copied += len(block)
        bar.update(len(block))


def _fetch_local(src: Path, part: Path, progress_bar: bool, name: str) -> None:
    if not src.is_file():
        raise DataError(f"{src}: file not found (from a file: URL; a relative path is taken from the "
                        f"current directory {Path.cwd()}); fix the URL or copy the file there")
    total = src.stat().st_size
    start = part.stat().st_size if part.exists() else 0
    if start > total:
        start = 0
    with open(src, "rb") as fh_in, open(part, "r+b" if start else "wb") as fh_out:
        fh_in.seek(start)
        fh_out.seek(start)
        fh_out.truncate()
        with tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=name, mininterval=5,
                  disable=not progress_bar) as bar:
            _copy_stream(fh_in, fh_out, bar)


def _fetch_http(url: str, part: Path, progress_bar: bool, name: str, timeout: float) -> None:
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the partial file is not a prefix the server knows: start over
            part.unlink()
            raise _Retryable(f"HTTP 416 for a resume at byte {start}; starting again") from exc
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}; check the URL (or download the file "
                        "yourself and point the URL at it with file://)") from exc
    except (*_NETWORK_ERRORS, OSError) as exc:  # refused, reset, DNS, timeout before the headers
        raise _Retryable(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                part.unlink()
                raise _Retryable(f"unexpected Content-Range '{content_range}' for a resume at {start}")
            total = int(content_range.rsplit("/", 1)[-1]) if content_range.rsplit("/", 1)[-1].isdigit() else None
            mode = "ab"
        else:  # 200: the server sends the whole file (no range support, or a fresh download)
            if start:
                log.info("%s: the server does not resume (HTTP %d); downloading from the start", name, status)
            start = 0
            total = length
            mode = "wb"
        with open(part, mode) as out, tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=name,
                                           mininterval=5, disable=not progress_bar) as bar:
            copied = _copy_stream(response, out, bar)
        if length is not None and copied < length:
            raise _Retryable(f"short read: {copied} of {length} bytes")


# ---------------------------------------------------------------------------------------------- download


def download(url: str, raw_dir: str | Path, *, sha256: Iterable[str] = (), lock: bool = True,
             size: int | None = None, name: str | None = None, retries: int = 3, backoff: float = 2.0,
             timeout: float = 60.0, progress: bool = True, force: bool = False,
             check: Callable[[Path], None] | None = None) -> dict:
    """Fetch ``url`` into ``raw_dir/<name>`` (default: the URL's file name) and verify it.

    ``sha256``: accepted hashes (published, or a mirror's); ``lock``: record the first download's hash
    when none of them vouches for it and check later downloads against it; ``size``: the expected size
    in bytes, checked when only the first-download lock would vouch for a file (0 or None: unchecked).
    ``force``: download again even when a verified file is present (to check upstream); the present
    file is replaced only by a download that verifies. ``check``: a test of the downloaded bytes (e.g.
    that a zip opens) run before they are accepted; it raises DataError to reject them.
    Returns a record: name, url, path, size, sha256, verified_by ("sha256 listed in the card",
    "lock file", "first download: lock recorded" or "unverified"), downloaded.
    """
    check_url(url)
    accepted = _normalise(sha256, "sha256")
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    name = name or file_name(url)
    dest = raw_dir / name
    part = dest.with_name(dest.name + PART_SUFFIX)
    locked = read_lock(dest) if lock else None

    if dest.exists() and not force:
        actual = sha256_of(dest)
        verdict = _verdict(actual, accepted, locked, lock)
        if verdict is None:
            raise DataError(_mismatch_message(dest, url, accepted, locked, actual, present=True))
        if verdict == "first":  # present but never recorded (placed by hand, or lock deleted)
            _check_size(dest, size, url, actual)
            write_lock(dest, actual)
            verdict = "first download: lock recorded"
        log.info("%s: already present and verified (%s); nothing to download", dest, verdict)
        return _record(url, dest, actual, verdict, downloaded=False)

    src = local_path(url)
    attempt = 0
    while True:
        try:
            if src is not None:
                _fetch_local(src, part, progress, name)
            else:
                _fetch_http(url, part, progress, name, timeout)
            break
        except _Retryable as exc:
            attempt += 1
            if attempt > retries:
                raise DataError(f"{url}: download failed after {retries + 1} attempts ({exc}); the partial "
                                f"file {part} is kept and the next `objguided fetch` resumes it") from exc
            wait = backoff * 2 ** (attempt - 1)
            log.warning("%s: %s; retry %d of %d in %.0f s", name, exc, attempt, retries, wait)
            time.sleep(wait)

    actual = sha256_of(part)
    verdict = _verdict(actual, accepted, locked, lock)
    if verdict is None:
        got = part.stat().st_size
        part.unlink()
        raise DataError(_mismatch_message(dest, url, accepted, locked, actual, present=False, got_size=got))
    try:
        if verdict == "first":
            _check_size(part, size, url, actual, shown=dest)
        if check is not None:
            check(part)
    except DataError as exc:
        part.unlink()
        kept = "left untouched" if dest.exists() else "not written"
        raise DataError(f"{dest}: the download from {url} was rejected and discarded ({dest.name} {kept}): "
                        f"{exc}") from exc
    if verdict == "first":
        write_lock(dest, actual)
        verdict = "first download: lock recorded"
        log.warning("%s: no published sha256 vouches for this file; recorded %s in %s (later downloads must "
                    "match it)", dest, actual, lock_path(dest))
    os.replace(part, dest)
    return _record(url, dest, actual, verdict, downloaded=True)


def _verdict(actual: str, accepted: list[str], locked: str | None, lock: bool) -> str | None:
    if actual in accepted:
        return "sha256 listed in the card"
    if locked is not None:
        return "lock file" if actual == locked else None
    if lock:
        return "first"
    return None if accepted else "unverified"


def _check_size(path: Path, size: int | None, url: str, actual: str, shown: Path | None = None) -> None:
    got = path.stat().st_size
    if size and got != size:
        raise DataError(f"{shown or path}: {got:,} bytes from {url}, expected {size:,} (sha256 {actual}, which "
                        "no listed hash vouches for); the download is incomplete or a different file: delete "
                        "it and fetch again, or if this file is right set the dataset's options.size to "
                        f"{got} (and add its sha256 to options.sha256)")


def _mismatch_message(dest: Path, url: str, accepted: list[str], locked: str | None, actual: str, *,
                      present: bool, got_size: int | None = None) -> str:
    expected = list(accepted) + ([f"{locked} (recorded in {lock_path(dest)})"] if locked else [])
    if present:
        what = f"{dest}: the file already here does not match"
        fix = f"delete {dest} and fetch again"
    else:
        what = f"{dest}: the download from {url} ({got_size:,} bytes) does not match"
        kept = f"{dest} already here was left untouched" if dest.exists() else f"nothing was written to {dest}"
        fix = f"the download was discarded and {kept}; check the URL and fetch again"
    if locked:
        trust = f"; if the new file is right (upstream changed it), delete {lock_path(dest)} and fetch again"
    else:
        trust = "; if the new file is right, add its sha256 to the dataset's options.sha256"
    return f"sha256 mismatch: {what}: expected {' or '.join(expected)}, got {actual}. Fix: {fix}{trust}"


def _record(url: str, dest: Path, actual: str, verdict: str, *, downloaded: bool) -> dict:
    return {"name": dest.name, "url": url, "path": str(dest), "size": dest.stat().st_size, "sha256": actual,
            "verified_by": verdict, "downloaded": downloaded}
