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
    assert one_line(error) == "no space left on out (needed about 12 MB, 2.0 MB free)" and error.errno == errno.ENOSPC


def test_free_space_check(tmp_path, monkeypatch):
    check_free_space(tmp_path / "not" / "yet", 1)
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 5_000_000,
                                                                                     5_000_000))
    with pytest.raises(NoSpaceError, match=r"no space left on .*yet \(needed about 40 MB, 5.0 MB free\)"):
        check_free_space(tmp_path / "not" / "yet", 40_000_000)


def test_an_unknown_or_missing_device_is_the_users_to_fix():
    import torch

    from vidiff.devices import pick_device

    with pytest.raises(VidiffInputError, match="unknown device 'nope'"):
        pick_device("nope")  # torch says RuntimeError, which would have been exit 1
    if not torch.cuda.is_available():
        with pytest.raises(VidiffInputError, match="no CUDA device"):
            pick_device("cuda:0")


# ---------------------------------------------------------------------------------------------------------------
# A full disk: "no space left on FOLDER (needed about N MB)", checked before sampling where the size is known
# ---------------------------------------------------------------------------------------------------------------

def _disk_with(monkeypatch, free_bytes: int) -> None:
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - free_bytes,
                                                                                     free_bytes))


def test_an_encoder_that_runs_out_of_space_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    import imageio_ffmpeg
    import numpy as np

    from vidiff.io.video import write_video

    real = imageio_ffmpeg.write_frames

    def stops_short(*args, **kwargs):  # what ffmpeg does on a full disk: a short file, and exit status unread
        return real(*args, **{**kwargs, "output_params": ["-frames:v", "2"]})

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", stops_short)
    _disk_with(monkeypatch, 200_000)
    frames = np.zeros((16, 256, 256, 3), np.uint8)
    with pytest.raises(NoSpaceError, match=r"no space left on .* \(needed about 3.2 MB, 0.2 MB free\)"):
        write_video(frames, tmp_path / "clip.mkv", fps=8, metadata={})
    assert list(tmp_path.iterdir()) == []  # no temporaries, no sidecar


def test_a_frame_folder_that_runs_out_of_space_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    import imageio.v3 as iio
    import numpy as np

    from vidiff.io.video import write_video

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(iio, "imwrite", no_room)
    with pytest.raises(NoSpaceError, match=r"needed about 3.2 MB"):
        write_video(np.zeros((16, 256, 256, 3), np.uint8), tmp_path / "frames")
    assert list(tmp_path.iterdir()) == []


def test_generate_checks_the_room_before_sampling(tiny_video_folder, tmp_path, capsys, monkeypatch):
    from vidiff.cli import main
    from vidiff.pipelines import text_to_video

    sampled = []
    monkeypatch.setattr(text_to_video.TextToVideoPipeline, "from_pretrained", lambda *a, **k: sampled.append(1))
    _disk_with(monkeypatch, 10_000)
    out = tmp_path / "frames"
    assert main(["generate", "a red circle", "--model", str(tiny_video_folder), "-o", str(out), "--num-frames",
                 "16", "--height", "256", "--width", "256", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"vidiff generate: error: no space left on {out} (needed about 3.2 MB, 0.0 MB free)", err
    assert not sampled and not out.exists()


def test_train_checks_the_room_before_training(tiny_video_folder, tmp_path, capsys, monkeypatch):
    from vidiff.cli import main
    from vidiff.training import trainer

    monkeypatch.setattr(trainer, "_loss", lambda *a, **k: pytest.fail("trained on a full disk"))
    _disk_with(monkeypatch, 1_000_000)
    clips = tmp_path / "clips"
    clips.mkdir()
    assert main(["train", f"model={tiny_video_folder}", f"data={clips}", f"output={tmp_path / 'run'}",
                 "num_frames=4", "resolution=32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"vidiff train: error: no space left on {tmp_path / 'run'} (needed about "), err
