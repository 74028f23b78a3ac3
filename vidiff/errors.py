"""The error policy: what the user can fix is a `VidiffInputError` (or an I/O error on their paths); anything else
is a failure inside vidiff or its libraries.

The command line prints a user error as one line and exits with 2, and lets every other exception end the program
with its traceback and exit code 1. So the checks raise `VidiffInputError`, never a bare `ValueError`: a
`ValueError` from deep inside (a bug, hours into training) keeps its traceback. `VidiffInputError` subclasses
`ValueError`, so library callers that catch `ValueError` keep working.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


class VidiffInputError(ValueError):
    """Bad input the user can fix: an argument, a config value, a file or folder they named."""


class NoSpaceError(OSError):
    """Not enough free disk space for an output (errno ENOSPC), with the folder and about how much was needed."""

    def __init__(self, folder: str | os.PathLike, needed_bytes: int | None = None, free_bytes: int | None = None):
        need = f" (needed about {_megabytes(needed_bytes)}" if needed_bytes else ""
        free = f", {_megabytes(free_bytes)} free)" if need and free_bytes is not None else (")" if need else "")
        super().__init__(errno.ENOSPC, f"no space left on {folder}{need}{free}")
        self.folder = Path(folder)

    def __str__(self) -> str:
        return self.strerror


# OS errors about paths the user named (a missing input, an existing output, a folder they cannot write) and a full
# disk are theirs to fix too; any other OSError is not.
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
FULL_BELOW_BYTES = 1 << 20  # a write that fails with less than this free failed for want of space


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is the user's to fix (exit 2, one line) rather than a failure inside vidiff (exit 1)."""
    return (isinstance(error, (VidiffInputError, *USER_OS_ERRORS))
            or (isinstance(error, OSError) and error.errno == errno.ENOSPC))


def one_line(error: BaseException) -> str:
    """The message the command line prints for a user error."""
    if isinstance(error, OSError) and not isinstance(error, NoSpaceError) and error.strerror:
        # open() and friends: "[Errno 2] No such file or directory: 'x'" -> "x: no such file or directory"
        where = error.filename if error.filename is not None else ""
        reason = "no space left on the device" if error.errno == errno.ENOSPC else error.strerror
        return f"{where}: {reason[:1].lower()}{reason[1:]}" if where else reason
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_free_space(folder: str | os.PathLike, needed_bytes: int) -> None:
    """Raise `NoSpaceError` when the file system holding `folder` (or its nearest existing parent) has less than
    `needed_bytes` free."""
    free = _free(folder)
    if free < needed_bytes:
        raise NoSpaceError(folder, needed_bytes, free)


@contextlib.contextmanager
def reporting_full_disk(folder: str | os.PathLike, needed_bytes: int | None = None,
                        written: Callable[[], int] = lambda: 0) -> Iterator[None]:
    """Turn a write that failed on a full disk into a `NoSpaceError` for `folder`, whatever the writer raised
    (ffmpeg reports a short file, safetensors and torch.save their own errors): an ENOSPC in the error's chain, or
    almost no free space left while the partial output still takes its room. `needed_bytes`: the estimated size of
    the output; `written()`: what had been written when it failed."""
    try:
        yield
    except Exception as error:
        if isinstance(error, NoSpaceError) or not _out_of_space(error, folder):
            raise
        raise NoSpaceError(folder, max(needed_bytes or 0, written()), _free(folder)) from error


def _out_of_space(error: BaseException, folder: str | os.PathLike) -> bool:
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return _free(folder) < FULL_BELOW_BYTES


def _free(folder: str | os.PathLike) -> int:
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    return shutil.disk_usage(existing).free


def _megabytes(count: int) -> str:
    megabytes = count / 1e6
    return f"{megabytes:.0f} MB" if megabytes >= 10 else f"{megabytes:.1f} MB"
