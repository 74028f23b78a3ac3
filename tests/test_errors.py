"""The error policy (vidiff.errors): what the user can fix is one line and exit 2; a failure inside vidiff or its
libraries keeps its traceback and exits 1. Checked in child processes, where the exit code is the point."""

import errno
import os
import subprocess
import sys

import pytest

from vidiff.errors import NoSpaceError, VidiffInputError, check_free_space, is_user_error, one_line

# A child process running the `vidiff` program with one library function replaced by one that raises (the config
# reader of `vidiff train`, which runs before any model library is imported).
CHILD = """
import sys
import vidiff.config

def load_config(*args, **kwargs):
    raise {error}

vidiff.config.load_config = load_config
from vidiff.cli import run
sys.argv = ["vidiff", "train", "model=m", "data=d"]
sys.exit(run())
"""


def _vidiff_with(error: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD.format(error=error)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)


@pytest.mark.parametrize("error", ["ValueError('an internal bug')", "KeyError('an internal bug')",
                                   f"OSError({errno.EIO}, 'an internal bug')"])
def test_a_failure_inside_vidiff_exits_1_with_its_traceback(error):
    result = _vidiff_with(error)
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr and "an internal bug" in result.stderr


@pytest.mark.parametrize("error", ["__import__('vidiff.errors').errors.VidiffInputError('your config is wrong')",
                                   "FileNotFoundError('your config is wrong')",
                                   "PermissionError(13, 'your config is wrong', 'x.json')"])
def test_what_the_user_can_fix_exits_2_in_one_line(error):
    result = _vidiff_with(error)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidiff train: error: ") and "your config is wrong" in lines[0]


def test_user_errors_and_their_one_line():
    assert is_user_error(VidiffInputError("x")) and not is_user_error(ValueError("x"))
    assert is_user_error(OSError(errno.ENOSPC, "No space left on device")) and not is_user_error(OSError(errno.EIO, "x"))
    assert one_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "a/b.mp4")) == \
        "a/b.mp4: no such file or directory"
    assert one_line(OSError(errno.ENOSPC, "No space left on device", "out.mp4")) == "out.mp4: no space left on the device"
    assert one_line(VidiffInputError("first line\nsecond")) == "first line"
    error = NoSpaceError("out", needed_bytes=12_300_000, free_bytes=2_000_000)
    assert one_line(error) == "no space left on out (needed about 12 MB, 2 MB free)" and error.errno == errno.ENOSPC


def test_free_space_check(tmp_path, monkeypatch):
    check_free_space(tmp_path / "not" / "yet", 1)
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 5_000_000,
                                                                                     5_000_000))
    with pytest.raises(NoSpaceError, match=r"no space left on .*yet \(needed about 40 MB, 5 MB free\)"):
        check_free_space(tmp_path / "not" / "yet", 40_000_000)


def test_an_unknown_or_missing_device_is_the_users_to_fix():
    import torch

    from vidiff.devices import pick_device

    with pytest.raises(VidiffInputError, match="unknown device 'nope'"):
        pick_device("nope")  # torch says RuntimeError, which would have been exit 1
    if not torch.cuda.is_available():
        with pytest.raises(VidiffInputError, match="no CUDA device"):
            pick_device("cuda:0")
