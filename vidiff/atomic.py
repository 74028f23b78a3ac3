"""Atomic writes: build the file or folder beside its destination, then move it into place under a lock.

A crash or an exception at any point leaves either the old content or the complete new one, never half a file.
Writers of one destination publish one at a time (`destination_lock`), so with `overwrite=False` two processes
racing for one path end with one result and one `FileExistsError`, and nothing is ever replaced that was not
meant to be. Temporaries carry the writing host and process in their names (`.NAME~HOST~PID~XXXX.tmp`), so those
of a killed writer can be told from those of a live one and removed (`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vidiff.errors import reporting_full_disk

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; publishing still never replaces unless asked
    fcntl = None

# A temporary's name: ".NAME~HOST~PID~RANDOM.tmp[.SUFFIX]" (or ".old" for a folder being replaced).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)~(?P<host>[^~/]*)~(?P<pid>\d+)~[^~/]*\.(tmp|old)(\.[^~/]*)?$")
# Temporaries whose writer cannot be checked (another host, or named before writers were recorded) count as left
# over once they are this old; no vidiff write takes that long.
STALE_AFTER_S = 3600


def check_destination(path: str | os.PathLike, overwrite: bool = False,
                      replaceable: Callable[[Path], bool] | None = None) -> None:
    """Refuse a destination that exists, unless `overwrite`; even then refuse one that `replaceable` says is not
    ours to replace (e.g. a folder holding the user's other files). `FileExistsError` names it."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it, or choose another path")
    if replaceable is not None and not replaceable(path):
        raise FileExistsError(f"{path} exists and holds files vidiff did not write there, so it is not replaced even "
                              "with --overwrite; choose another path")


@contextlib.contextmanager
def destination_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on publishing to `path`: a `.NAME.lock` file beside it, removed on release."""
    path = Path(path)
    if fcntl is None:
        yield
        return
    lock = path.parent / f".{path.name}.lock"
    while True:  # the lock file may be removed by the holder we waited for: lock the file that is there now
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)


@contextlib.contextmanager
def temporary_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary file path next to `path` (created empty, with the usual permissions); it is removed on exit
    unless it has been published (`publish_file`). `suffix` defaults to `path`'s own: some writers pick the format
    from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual permissions
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def publish_file(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a finished temporary file to `path` (the caller holds `destination_lock(path)`). Without `overwrite` an
    existing `path` is never replaced: `FileExistsError`."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails, atomically, if path exists (whoever wrote it)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists (written while this one was being made); "
                              "choose another path") from None
    except OSError as error:  # a file system without hard links: the lock keeps vidiff's writers apart
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        check_destination(path)
        os.replace(tmp, path)
    else:
        tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, overwrite: bool = True,
                size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary file path next to `path`; on success it becomes `path`, on error it is removed.

    `suffix` defaults to the destination's own suffix, since some writers pick the format from it. With
    `overwrite=False` an existing `path` is refused, before and at publishing (`FileExistsError`). A write that
    fails on a full disk is a `NoSpaceError` (needing about `size_hint` bytes, or what was written).
    """
    path = Path(path)
    if not overwrite:
        check_destination(path)
    with temporary_path(path, suffix) as tmp:
        with reporting_full_disk(path.parent, size_hint, lambda: _size(tmp) if tmp.exists() else 0):
            yield tmp
        if tmp.is_file():  # some writers replace the file they are given, with 0600 (safetensors does)
            tmp.chmod(0o666 & ~_umask())
        with destination_lock(path):
            publish_file(tmp, path, overwrite)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False,
               replaceable: Callable[[Path], bool] | None = None, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it becomes `path`, on error it is removed.

    With `overwrite`, an existing folder at `path` is replaced only once the new one is complete, and only if
    `replaceable(path)` (when given) says it is one vidiff may replace; otherwise an existing `path` is refused,
    before and at publishing (`FileExistsError`). A write that fails on a full disk is a `NoSpaceError` (needing
    about `size_hint` bytes, or what was written).
    """
    path = Path(path)
    check_destination(path, overwrite, replaceable)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        with reporting_full_disk(path.parent, size_hint, lambda: _size(tmp)):
            yield tmp
        _usual_permissions(tmp)
        with destination_lock(path):
            check_destination(path, overwrite, replaceable)
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".old", dir=path.parent))
                os.replace(path, old / "content")
                os.replace(tmp, path)
                shutil.rmtree(old)
            else:
                os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write a small text file atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def stale_temporaries(folder: str | os.PathLike, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """The temporaries in `folder` (not below it) left by writers that are gone: this host's, whose process has
    ended; others (another host's, or without a writer in the name) once older than `max_age_s`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    here, now, found = _host(), time.time(), []
    for entry in folder.iterdir():
        if not entry.name.startswith(".") or not re.search(r"\.(tmp|old)(\.[^.~/]*)?$", entry.name):
            continue
        match, gone = _TEMPORARY.match(entry.name), False
        if match and match["host"] == here:
            gone = not _process_alive(int(match["pid"]))
        else:
            with contextlib.suppress(FileNotFoundError):
                gone = now - entry.lstat().st_mtime > max_age_s
        if gone:
            found.append(entry)
    return sorted(found)


def remove_stale_temporaries(folder: str | os.PathLike, max_age_s: float = STALE_AFTER_S) -> list[tuple[Path, int]]:
    """Remove `stale_temporaries(folder)`; returns each one removed with its size in bytes."""
    removed = []
    for entry in stale_temporaries(folder, max_age_s):
        size = _size(entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not (entry.exists() or entry.is_symlink()):
            removed.append((entry, size))
    return removed


def _prefix(path: Path) -> str:
    return f".{path.name}~{_host()}~{os.getpid()}~"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:48] or "host"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _size(entry: Path) -> int:
    if entry.is_file() or entry.is_symlink():
        return entry.lstat().st_size
    return sum(p.lstat().st_size for p in entry.rglob("*") if p.is_file())


def _usual_permissions(folder: Path) -> None:
    """Files some writers make 0600 (safetensors does, whatever the umask) get the umask's permissions, as any other
    file would; folders too."""
    files, folders = 0o666 & ~_umask(), 0o777 & ~_umask()
    for entry in folder.rglob("*"):
        if entry.is_symlink():
            continue
        mode = entry.stat().st_mode & 0o777
        wanted = folders if entry.is_dir() else files | (mode & 0o111 & ~_umask())
        if mode != wanted:
            entry.chmod(wanted)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
