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

Verification (:func:`download`), in this order of trust:

- a sha256 the config gives (``options.sha256``) is binding: a file that matches none of the listed values
  is refused, however it came (downloaded now or already in the raw folder);
- a source's *default* list (e.g. the hash of a local mirror) vouches for a file it matches, but a file it
  does not match may still be trusted on first use (:func:`source_default_hashes` says which values are
  defaults; ``objguided.data.convert.fetch`` sets it when the config gives no sha256);
- when nothing listed vouches for the file (trust on first use), the sha256 of the first download is
  recorded in a lock file beside it, ``<file>.sha256.lock`` (``sha256sum -c`` format, so
  ``cd resources/raw/<dataset> && sha256sum -c <file>.sha256.lock`` re-checks it by hand); later downloads
  must then match the lock. Deleting the raw folder forgets both; deleting only the file keeps the lock, so
  the next download must still match it (delete the lock to accept a new upstream version on purpose).

A file already in the raw folder gets the same checks as a fresh download (sha256, expected size, the
caller's ``check``, e.g. that a zip opens and its members pass their CRC), and a lock is only ever
written for a file that passed them.

Safety: the bytes go to ``<file>.part``; only a verified ``.part`` is renamed onto ``<file>``, so a failed
or mismatching download never touches good data already there. A file already present and verified is
not downloaded again. Two fetches of the same file at once (two workflows, a user and the DAG) take turns
on an exclusive lock (``.<file>.fetch-lock``, removed when done): the second waits, then finds the file
verified. A full disk or a raw folder that cannot be written is one clear error naming the path (free
space is checked before the download when its size is known).

Why not pooch for the transfer: ``pooch.retrieve`` verifies a *known* hash and downloads to a temporary
file of its own, so it can neither resume a partial download (no ``Range``) nor record a first hash. The
hashing here is the same streaming sha256 pooch uses (``pooch.file_hash``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import hashlib
import logging
import os
import shlex
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from objguided.engine.atomic import free_bytes
from objguided.errors import ConfigError, DataError

log = logging.getLogger("objguided.fetch")

CHUNK = 1 << 20
LOCK_SUFFIX = ".sha256.lock"
PART_SUFFIX = ".part"
USER_AGENT = "objguided-fetch (+https://github.com/; research reproducibility harness)"

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


class _Retryable(Exception):
    """A transient failure (network, short read, server error): try again, resuming."""


class _DiskFull(Exception):
    """The raw folder's disk has no room for the rest of the download."""

    def __init__(self, written: int, total: int | None):
        super().__init__(f"disk full after {written} bytes")
        self.written, self.total = written, total


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


# ---------------------------------------------------------------------------------------------- what vouches


#: sha256 values that a source lists by default (a mirror's hash): they vouch for a file they match, but
#: do not exclude others, which are then trusted on first use. Set by objguided.data.convert.fetch when
#: the config gives no sha256 of its own; a value the caller of :func:`download` gives otherwise is binding.
_DEFAULT_HASHES: contextvars.ContextVar[frozenset] = contextvars.ContextVar("objguided_default_hashes",
                                                                            default=frozenset())


@contextlib.contextmanager
def source_default_hashes(values: Iterable[str]) -> Iterator[None]:
    """Within the block, these sha256 values are a source's defaults, not a hash the user configured."""
    token = _DEFAULT_HASHES.set(frozenset(_normalise(values, "sha256")))
    try:
        yield
    finally:
        _DEFAULT_HASHES.reset(token)


@dataclass
class _Trust:
    """What may vouch for a file: binding hashes (configured), optional ones (a source's defaults), the lock."""

    binding: list[str]
    optional: list[str]
    locked: str | None  # the first download's sha256, when the lock counts
    lock: bool  # trust on first use: record a lock when nothing else vouches

    @classmethod
    def of(cls, listed: list[str], lock: bool, dest: Path) -> "_Trust":
        defaults = _DEFAULT_HASHES.get()
        binding = [h for h in listed if h not in defaults]
        optional = [h for h in listed if h in defaults]
        # a configured hash leaves no room for trust on first use: the lock is not consulted
        locked = read_lock(dest) if lock and not binding else None
        return cls(binding, optional, locked, lock and not binding)

    def verdict(self, actual: str) -> str | None:
        """How ``actual`` is vouched for; "first" when only a new lock would; None when it is refused."""
        if actual in self.binding or actual in self.optional:
            return "sha256 listed in the card"
        if self.binding:
            return None
        if self.locked is not None:
            return "lock file" if actual == self.locked else None
        if self.lock:
            return "first"
        return None if self.optional else "unverified"

    def expected(self, dest: Path) -> list[str]:
        return self.binding + self.optional + ([f"{self.locked} (recorded in {lock_path(dest)})"]
                                               if self.locked else [])


# ---------------------------------------------------------------------------------------------- checks


def check_zip(path: Path) -> None:
    """The archive opens and every member passes its CRC check (what a truncated download fails)."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable zip archive ({exc})") from exc
    if bad is not None:
        raise DataError(f"{path}: member '{bad}' fails its CRC check")


def default_check(name: str) -> Callable[[Path], None] | None:
    """The integrity check a file gets when the caller names none: a ``.zip`` must open and pass its CRCs."""
    return check_zip if name.lower().endswith(".zip") else None


def _check_size(path: Path, size: int | None, url: str, actual: str, shown: Path | None = None) -> None:
    got = path.stat().st_size
    if size and got != size:
        raise DataError(f"{shown or path}: {got:,} bytes from {url}, expected {size:,} (sha256 {actual}, which "
                        "no listed hash vouches for); the download is incomplete or a different file: delete "
                        "it and fetch again, or if this file is right set the dataset's options.size to "
                        f"{got} (and add its sha256 to options.sha256)")


# ---------------------------------------------------------------------------------------------- one at a time


@contextlib.contextmanager
def exclusively(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created, and removed when done) for the block.

    ``what`` names the work in the message a waiting process logs. The lock is a ``flock``: the kernel
    releases it when its holder dies, so a killed holder never blocks the next one. The file is removed
    while still held, and a waiter that then wakes on the removed file tries again on a fresh one, so two
    holders never overlap. Where the folder cannot be written at all, nobody can write beside ``path``
    either: the block then runs without the lock (and any write it tries reports the read-only folder).
    """
    fd = _acquire(path, what)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)


def _acquire(path: Path, what: str) -> int | None:
    """The locked descriptor of ``path``, or None where no lock can be had (read-only, no flock support)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if exc.errno in _NOT_WRITABLE:
                return None
            raise
        try:
            if not _lock_or_wait(fd, path, what):
                os.close(fd)
                path.unlink(missing_ok=True)
                return None
            if _still_named(fd, path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message of whoever waits next
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed the file we waited on: lock the current one instead


def _lock_or_wait(fd: int, path: Path, what: str) -> bool:
    """Take the flock, waiting (and saying so) while another process holds it; False: flock unsupported."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        log.warning("%s: another process (pid %s) is doing %s; waiting for it to finish", path, holder, what)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except OSError as exc:
        if exc.errno not in _NO_FLOCK:
            raise
        log.warning("%s: this file system has no file locks (%s); doing %s without one: run one at a time",
                    path, exc.strerror, what)
        return False


def _still_named(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


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
        try:
            out.write(block)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise _DiskFull(_bytes_on_disk(out, bar.n), bar.total) from exc
            raise
        copied += len(block)
        bar.update(len(block))


def _bytes_on_disk(out, fallback: int) -> int:
    """How much of the file a failed write left on disk (where a resume would start)."""
    try:
        return os.fstat(out.fileno()).st_size
    except (OSError, ValueError, AttributeError):
        return fallback


def _ensure_room(part: Path, start: int, total: int | None) -> None:
    """Before writing: the rest of the file (``total`` - ``start`` bytes) must fit on the raw folder's disk."""
    if total is None:
        return
    overwritten = max(0, part.stat().st_size - start) if part.exists() else 0  # a restart frees these
    if total - start > shutil.disk_usage(part.parent).free + overwritten:
        raise _DiskFull(start, total)


def _fetch_local(src: Path, part: Path, progress_bar: bool, name: str) -> None:
    if not src.is_file():
        raise DataError(f"{src}: file not found (from a file: URL; a relative path is taken from the "
                        f"current directory {Path.cwd()}); fix the URL or copy the file there")
    total = src.stat().st_size
    start = part.stat().st_size if part.exists() else 0
    if start > total:
        start = 0
    _ensure_room(part, start, total)
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
        _ensure_room(part, start, total)
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

    ``sha256``: accepted hashes; a file matching none of them is refused (unless they are a source's
    defaults, see :func:`source_default_hashes`). ``lock``: when no listed hash is binding, record the
    first download's hash and hold later downloads to it; ``size``: the expected size in bytes, checked
    when only the first-download lock would vouch for a file (0 or None: unchecked). ``force``: download
    again even when a verified file is present (to check upstream); the present file is replaced only by
    a download that verifies. ``check``: a test of the bytes (e.g. that a zip opens), run on a download
    before it is accepted and on a file already present; it raises DataError to reject them. Default: a
    ``.zip`` must open and pass its CRC checks. Returns a record: name, url, path, size, sha256,
    verified_by ("sha256 listed in the card", "lock file", "first download: lock recorded" or
    "unverified"), downloaded.
    """
    check_url(url)
    listed = _normalise(sha256, "sha256")
    raw_dir = Path(raw_dir)
    name = name or file_name(url)
    dest = raw_dir / name
    check = check if check is not None else default_check(name)
    with _plain_os_errors(url, raw_dir, dest):
        raw_dir.mkdir(parents=True, exist_ok=True)
        with exclusively(raw_dir / f".{name}.fetch-lock", f"a fetch of {name}"):
            trust = _Trust.of(listed, lock, dest)
            if dest.exists() and not force:
                return _accept_present(url, dest, trust, size, check)
            return _download_and_verify(url, dest, trust, size, check, retries, backoff, timeout, progress)


def _accept_present(url: str, dest: Path, trust: _Trust, size: int | None, check) -> dict:
    """A file already in the raw folder: the same checks as a download, then nothing to fetch."""
    actual = sha256_of(dest)
    verdict = trust.verdict(actual)
    if verdict is None:
        raise DataError(_mismatch_message(dest, url, trust, actual, present=True))
    if verdict == "first":  # present but never recorded (placed by hand, or lock deleted)
        _check_size(dest, size, url, actual)
    if check is not None:
        try:
            check(dest)
        except DataError as exc:
            raise DataError(_damaged_present_message(dest, trust, actual, exc)) from exc
    if verdict == "first":
        write_lock(dest, actual)
        verdict = "first download: lock recorded"
    log.info("%s: already present and verified (%s); nothing to download", dest, verdict)
    return _record(url, dest, actual, verdict, downloaded=False)


def _download_and_verify(url: str, dest: Path, trust: _Trust, size: int | None, check, retries: int,
                         backoff: float, timeout: float, progress: bool) -> dict:
    part = dest.with_name(dest.name + PART_SUFFIX)
    _transfer(url, part, dest, retries, backoff, timeout, progress)
    actual = sha256_of(part)
    verdict = trust.verdict(actual)
    if verdict is None:
        got = part.stat().st_size
        part.unlink()
        raise DataError(_mismatch_message(dest, url, trust, actual, present=False, got_size=got))
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
    if verdict == "first":  # only now, when every check passed: a lock never vouches for rejected bytes
        write_lock(dest, actual)
        verdict = "first download: lock recorded"
        log.warning("%s: no published sha256 vouches for this file; recorded %s in %s (later downloads must "
                    "match it)", dest, actual, lock_path(dest))
    os.replace(part, dest)
    return _record(url, dest, actual, verdict, downloaded=True)


def _transfer(url: str, part: Path, dest: Path, retries: int, backoff: float, timeout: float,
              progress: bool) -> None:
    """Bring the bytes into ``part``, retrying (and resuming) transient failures."""
    src = local_path(url)
    attempt = 0
    while True:
        try:
            if src is not None:
                _fetch_local(src, part, progress, dest.name)
            else:
                _fetch_http(url, part, progress, dest.name, timeout)
            return
        except _DiskFull as exc:
            raise DataError(_disk_full_message(dest, part, url, exc.written, exc.total)) from exc
        except _Retryable as exc:
            attempt += 1
            if attempt > retries:
                raise DataError(f"{url}: download failed after {retries + 1} attempts ({exc}); "
                                f"{_partial_note(part)}; check the URL and the network, then fetch again") from exc
            wait = backoff * 2 ** (attempt - 1)
            log.warning("%s: %s; retry %d of %d in %.0f s", dest.name, exc, attempt, retries, wait)
            time.sleep(wait)


def _partial_note(part: Path) -> str:
    """What a failed download left: only a partial file that exists is named (with its size)."""
    got = part.stat().st_size if part.exists() else 0
    if got:
        return f"the partial file {part} ({got:,} bytes) is kept and the next `objguided fetch` resumes it"
    with contextlib.suppress(OSError):  # an empty one is no help to a resume
        part.unlink(missing_ok=True)
    return "nothing was downloaded"


# ---------------------------------------------------------------------------------------------- messages


@contextlib.contextmanager
def _plain_os_errors(url: str, raw_dir: Path, dest: Path) -> Iterator[None]:
    """A full disk or a folder that cannot be written: one line naming the path and the fix, no traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            part = dest.with_name(dest.name + PART_SUFFIX)
            raise DataError(_disk_full_message(dest, part, url, None, None)) from exc
        if exc.errno not in _NOT_WRITABLE:
            raise
        path = Path(exc.filename) if exc.filename else raw_dir
        if not _is_within(path, raw_dir):  # the source of a file: URL, not the raw folder
            raise DataError(f"{path}: cannot be read ({exc.strerror}); make it readable or fix the URL "
                            f"{url}") from exc
        raise DataError(f"{path}: cannot write the download of {url} there ({exc.strerror}): the raw folder "
                        f"{raw_dir} must be writable; make it writable, or fetch into another folder "
                        "(--raw)") from exc


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def _free_bytes(folder: Path) -> str:
    """Free bytes on ``folder``'s disk, for a message (a raw folder that could not be made: its parent's)."""
    free = free_bytes(folder)
    return f"{free:,}" if free is not None else "an unknown number of"


def _disk_full_message(dest: Path, part: Path, url: str, written: int | None, total: int | None) -> str:
    free = _free_bytes(dest.parent)
    if total is not None and written is not None:
        need = f"it needs {total - written:,} more bytes ({total:,} in all) and {free} are free"
    else:  # the size was not known in advance, or the disk filled outside the transfer
        need = f"the disk is full ({free} bytes free)"
    return (f"{dest}: not enough disk space to download {url}: {need} on {dest.parent}. Fix: free space "
            f"there (or fetch into another folder with --raw), then fetch again; {_partial_note(part)}")


def _damaged_present_message(dest: Path, trust: _Trust, actual: str, exc: DataError) -> str:
    """The one step that fixes a damaged file already here: remove it, and its lock if that vouches for it."""
    doomed = [dest]
    why = ""
    if trust.locked == actual:  # the lock was recorded for these same damaged bytes: it must go too
        doomed.append(lock_path(dest))
        why = f"; its lock {lock_path(dest)} records these same damaged bytes, so it must go too"
    command = "rm " + " ".join(shlex.quote(str(p)) for p in doomed)
    reason = str(exc).removeprefix(f"{dest}: ")  # the check names the file; this message already does
    return (f"{dest}: the file already here is damaged or incomplete ({reason}){why}. Fix: {command}, then "
            "fetch again")


def _mismatch_message(dest: Path, url: str, trust: _Trust, actual: str, *, present: bool,
                      got_size: int | None = None) -> str:
    if present:
        what = f"{dest}: the file already here does not match"
        fix = f"delete {dest} and fetch again"
    else:
        what = f"{dest}: the download from {url} ({got_size:,} bytes) does not match"
        kept = f"{dest} already here was left untouched" if dest.exists() else f"nothing was written to {dest}"
        fix = f"the download was discarded and {kept}; check the URL and fetch again"
    if trust.locked:
        trust_note = (f"; if the new file is right (upstream changed it, or the lock was recorded for a damaged "
                      f"download), delete {lock_path(dest)} and fetch again")
    elif trust.binding:
        trust_note = ("; a sha256 set in options.sha256 is binding: if the new file is right, add its sha256 to "
                      "the dataset's options.sha256")
    else:
        trust_note = "; if the new file is right, add its sha256 to the dataset's options.sha256"
    return (f"sha256 mismatch: {what}: expected {' or '.join(trust.expected(dest))}, got {actual}. "
            f"Fix: {fix}{trust_note}")


def _record(url: str, dest: Path, actual: str, verdict: str, *, downloaded: bool) -> dict:
    return {"name": dest.name, "url": url, "path": str(dest), "size": dest.stat().st_size, "sha256": actual,
            "verified_by": verdict, "downloaded": downloaded}
