"""Atomic file writes: a killed job never leaves a half-written output behind.

Every output of the harness is written here (:func:`atomic_path`, :func:`write_json`, :func:`write_text`; the
model and checkpoint files through :func:`atomic_path` too), so this is also the one place where a write that
the system refuses becomes one clear line: a full disk (``ENOSPC``, ``EDQUOT``, or PyTorch's own writer
failing part-way: ``enforce fail at inline_container.cc`` / ``PytorchStreamWriter failed writing file``), a
read-only file system (``EROFS``) or a folder we may not write (``EACCES``, ``EPERM``) raise
:class:`OutputError` naming the output path, and for a full disk how much was needed (where known) and how
much is free. :func:`check_writable` does the same before long work, so that a run does not find out at its
very end that it cannot keep its result.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from objguided.errors import ObjguidedError

_UMASK = os.umask(0)
os.umask(_UMASK)

_NO_SPACE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded"}
# the errors only a write raises (EACCES and EPERM may come from a read: translated only around a write)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
# PyTorch writes model files with its own C++ writer, which loses the errno: a full disk shows as one of these.
_TORCH_WRITER = ("PytorchStreamWriter failed", "inline_container.cc", "file write failed")
_FULL_BELOW = 1 << 20  # a writer failing part-way with less than this free: the disk is full


class OutputError(ObjguidedError, OSError):
    """An output cannot be written (full disk, read-only or forbidden folder); the message names the path."""


def human_bytes(n: int) -> str:
    """
    >>> human_bytes(512), human_bytes(20480), human_bytes(3 * 2**30)
    ('512 B', '20.0 KiB', '3.0 GiB')
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # unreachable


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent); None when the system won't say."""
    try:
        return shutil.disk_usage(nearest_existing(folder)).free
    except OSError:
        return None


def nearest_existing(folder: str | os.PathLike) -> Path:
    """``folder`` or its nearest existing parent (where a failed mkdir stopped)."""
    folder = Path(folder)
    if folder.exists():
        return folder
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def output_error(path: str | os.PathLike, exc: BaseException, *, size: int | None = None,
                 partial: str | os.PathLike | None = None, errnos=None) -> OutputError | None:
    """The :class:`OutputError` for ``exc``, raised while writing ``path``; None when ``exc`` is no such error.

    ``size``: the bytes the whole output needs, where known; ``partial``: the temporary file written so far
    (its bytes count as free: they are removed); ``errnos``: translate only these (default: full disk,
    read-only file system, permission denied).

    >>> print(output_error("/tmp/m.json", OSError(errno.EROFS, "Read-only file system")))
    /tmp/m.json: cannot write: /tmp is on a read-only file system; write the outputs to a writable folder
    >>> output_error("/tmp/m.json", OSError(errno.ENOENT, "No such file")) is None
    True
    """
    path = Path(path)
    folder = nearest_existing(path.parent)
    code = exc.errno if isinstance(exc, OSError) else None
    if errnos is not None and code not in errnos:
        return None
    if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITER):
        free = free_bytes(folder)
        if free is None or free >= _FULL_BELOW:  # not a full disk (an I/O error, a quota): say what we know
            return OutputError(f"{path}: cannot write: the write failed part-way through "
                               f"({_free_text(free, partial, folder)}); check the disk, then re-run")
        code = errno.ENOSPC
    if code in _NO_SPACE:
        free = free_bytes(folder)
        need = f"needs {human_bytes(size)}; " if size is not None else ""
        return OutputError(f"{path}: cannot write: {_NO_SPACE[code]} ({need}{_free_text(free, partial, folder)}); "
                           "free some space or write the outputs elsewhere, then re-run")
    if code == errno.EROFS:
        return OutputError(f"{path}: cannot write: {folder} is on a read-only file system; "
                           "write the outputs to a writable folder")
    if code in (errno.EACCES, errno.EPERM):
        return OutputError(f"{path}: cannot write: permission denied in {folder}; "
                           "write the outputs to a folder you may write")
    return None


def _free_text(free: int | None, partial, folder: Path) -> str:
    if free is None:
        return f"free space in {folder} unknown"
    with contextlib.suppress(OSError, TypeError):
        free += os.path.getsize(partial)  # the partial file is removed: its bytes are free again
    return f"{human_bytes(free)} free in {folder}"


def _raise_output_error(path, exc: BaseException, **kw) -> None:
    """Raise the translation of the exception being handled, or re-raise it unchanged."""
    err = output_error(path, exc, **kw)
    if err is None:
        raise exc
    raise err from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``size``, the bytes the output needs where known, goes into the message of a full disk; any refused
    write (see :func:`output_error`) raises :class:`OutputError` naming ``path``.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        _raise_output_error(path, exc, size=size)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs are meant to be shared
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        _raise_output_error(path, exc, size=size, partial=tmp)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(path: str | os.PathLike, probe_bytes: int = 4096) -> None:
    """Fail now, not after hours of work, when ``path`` cannot be written: make its folder, write
    ``probe_bytes`` to a probe file beside it and remove the probe; :class:`OutputError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        try:
            view = memoryview(b"\0" * probe_bytes)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        _raise_output_error(path, exc)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    data = text.encode("utf-8")
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)
