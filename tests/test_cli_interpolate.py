"""`vidiff interpolate`: frame count and fps of the output, the sidecar, and one-line errors (exit 2)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vidiff.cli import main
from vidiff.data.shapes import render_clip
from vidiff.io.video import read_video, write_video
from vidiff.models.interpolation import widen_conv_in
from vidiff.models.video_unet import VideoUNet

FAST = ["--steps", "2", "--no-progress"]


@pytest.fixture(scope="module")
def interp_folder(tiny_video_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("interp") / "model"
    shutil.copytree(tiny_video_folder, folder)
    shutil.rmtree(folder / "unet")
    widen_conv_in(VideoUNet.from_pretrained(tiny_video_folder / "unet")).save_pretrained(folder / "unet")
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "in.gif"
    write_video(render_clip("green", "triangle", "left", num_frames=4, size=64, seed=0), path, fps=5)
    return path


def test_interpolate_writes_n_minus_1_times_factor_plus_1_frames_at_factor_times_the_fps(interp_folder, clip,
                                                                                      tmp_path):
    out = tmp_path / "frames"  # a PNG folder: lossless, so the kept input frames can be compared exactly
    assert main(["interpolate", str(clip), "--factor", "3", "-o", str(out), "--model", str(interp_folder), *FAST]) == 0
    frames, fps = read_video(out)
    original, _ = read_video(clip)
    assert frames.shape == (10, 64, 64, 3) and fps == pytest.approx(15, abs=0.5)
    assert np.array_equal(frames[::3], original)
    sidecar = json.loads((out / "metadata.json").read_text())
    assert sidecar["factor"] == 3 and sidecar["input_frames"] == 4 and sidecar["frames"] == 10
    out2 = tmp_path / "out2.gif"
    assert main(["interpolate", str(clip), "--factor", "2", "-o", str(out2), "--model", str(interp_folder),
                 "--fps", "24", *FAST]) == 0
    assert read_video(out2)[1] == pytest.approx(24, abs=0.5)


def test_errors_are_one_line_with_exit_code_2_and_write_nothing(interp_folder, tiny_video_folder, clip, tmp_path,
                                                               capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    out = tmp_path / "out.mp4"
    cases = [
        (["--factor", "1", "--model", str(interp_folder)], "--factor 1 must be at least 2"),
        (["--factor", "2", "--model", str(tiny_video_folder)], "has no interpolation stage"),
    ]
    for extra, message in cases:
        assert main(["interpolate", str(clip), "-o", str(out), *extra, *FAST]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    for source in (bad, tmp_path / "missing.mp4"):
        assert main(["interpolate", str(source), "--factor", "2", "-o", str(out), "--model", str(interp_folder),
                     *FAST]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


def test_without_model_the_shipped_stage_is_used(clip, tmp_path):
    out = tmp_path / "default.gif"
    assert main(["interpolate", str(clip), "--factor", "2", "-o", str(out), *FAST]) == 0
    frames, _ = read_video(out)
    assert frames.shape == (7, 64, 64, 3)
    assert "default-model" in json.loads(Path(f"{out}.json").read_text())["model"]


def test_an_existing_output_is_refused_before_loading_and_replaced_with_overwrite(interp_folder, clip, tmp_path,
                                                                                  capsys):
    out = tmp_path / "out.gif"
    out.write_bytes(b"an earlier clip")
    argv = ["interpolate", str(clip), "--factor", "2", "-o", str(out), "--model", str(interp_folder), *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists; pass --overwrite" in err and len(err.splitlines()) == 1
    assert out.read_bytes() == b"an earlier clip"
    assert main([*argv, "--overwrite"]) == 0
    assert read_video(out)[0].shape[0] == 7
