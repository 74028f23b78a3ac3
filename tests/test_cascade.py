"""Cascades: cascade.json stages sharing the base's components, `generate` chaining them, `vidiff upscale`."""

import json
import shutil

import numpy as np
import pytest
import torch

from vidiff.cli import main
from vidiff.data.shapes import render_clip
from vidiff.io.video import read_video, sidecar_path, write_video
from vidiff.models.inflate_folder import inflate_model_folder
from vidiff.models.interpolation import widen_conv_in
from vidiff.models.video_unet import VideoUNet
from vidiff.pipelines.cascade import (
    interpolation_stage,
    load_interpolation,
    load_upscaler,
    read_cascade,
    upscale_stage,
)
from vidiff.pipelines.text_to_video import TextToVideoPipeline

FAST = ["--steps", "2", "--no-progress"]


@pytest.fixture(scope="module")
def cascade(tiny_video_folder, tmp_path_factory):
    """The tiny video model plus an interpolation stage (fp16 U-Net only) and a 2x upscale stage that shares the
    base's 8x VAE (low-res frames folded by 4: 4 + 48 input channels)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from vidiff.testing.tiny import make_tiny_upscaler

    root = tmp_path_factory.mktemp("cascade")
    folder = root / "model"
    shutil.copytree(tiny_video_folder, folder)
    widen_conv_in(VideoUNet.from_pretrained(folder / "unet")).half().save_pretrained(folder / "interpolation" / "unet")
    from diffusers import AutoencoderKL

    image = make_tiny_upscaler(root / "x2", in_channels=52, vae=AutoencoderKL.from_pretrained(folder / "vae"),
                               text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
                               tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"))
    video = inflate_model_folder(image, root / "x2-video", max_frames=8)
    shutil.copytree(video / "unet", folder / "upscale" / "unet")
    (folder / "cascade.json").write_text(json.dumps({"interpolation": {"path": "interpolation", "factor": 2},
                                                     "upscale": {"path": "upscale", "scale": 2}}))
    return folder


def test_read_cascade_and_stage_lookup(cascade, tiny_video_folder, tmp_path):
    stages = read_cascade(cascade)
    assert stages["interpolation"].default == 2 and stages["upscale"].default == 2
    assert interpolation_stage(cascade).path == cascade / "interpolation"
    assert upscale_stage(cascade).path == cascade / "upscale"
    assert read_cascade(tiny_video_folder) == {}
    with pytest.raises(ValueError, match="no upscale stage"):
        upscale_stage(tiny_video_folder)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_video_folder, broken)
    for text, message in (("{not json", "not a valid cascade file"), ('{"sharpen": {"path": "x", "scale": 2}}',
                                                                       "unknown stage"),
                          ('{"upscale": {"path": "nowhere", "scale": 2}}', "no unet/config.json")):
        (broken / "cascade.json").write_text(text)
        with pytest.raises(ValueError, match=message):
            read_cascade(broken)


def test_stages_share_the_base_components_and_cast_fp16_weights(cascade):
    base = TextToVideoPipeline.from_pretrained(cascade)
    between = load_interpolation(cascade, torch.device("cpu"), torch.float32, base_pipe=base)
    assert between.vae is base.vae and between.text_encoder is base.text_encoder
    assert between.scheduler is not base.scheduler  # schedulers keep state between calls
    assert between.unet.dtype == torch.float32 and between.unet.unet.config.in_channels == 9
    upscaler = load_upscaler(cascade, torch.device("cpu"), torch.float32, base_pipe=base)
    assert upscaler.vae is base.vae and upscaler.scale == 2 and upscaler.fold == 4
    alone = load_upscaler(cascade, torch.device("cpu"), torch.float32)  # no base pipe: loads only what it needs
    assert alone.unet.unet.config.in_channels == 52


def test_generate_runs_the_whole_cascade_by_default(cascade, tmp_path):
    out = tmp_path / "clip.gif"
    assert main(["generate", "a red circle moving right", "--model", str(cascade), "-o", str(out),
                 "--num-frames", "3", "--height", "32", "--width", "32", "--fps", "4", "--seed", "1", *FAST]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 64, 64, 3) and fps == pytest.approx(8, abs=0.5)  # (3 - 1) * 2 + 1 frames, 2x size
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["base"] == {"frames": 3, "fps": 4, "size": [32, 32]}
    assert sidecar["interpolation"]["factor"] == 2 and sidecar["upscale"]["scale"] == 2
    plain = tmp_path / "plain.gif"
    assert main(["generate", "a red circle moving right", "--model", str(cascade), "-o", str(plain),
                 "--num-frames", "3", "--height", "32", "--width", "32", "--interpolate", "1", "--upscale", "1",
                 *FAST]) == 0
    assert read_video(plain)[0].shape == (3, 32, 32, 3)


def test_generate_stage_errors_are_one_line(cascade, tiny_video_folder, tmp_path, capsys):
    cases = [
        (["--model", str(tiny_video_folder), "--interpolate", "2"], "has no interpolation stage"),
        (["--model", str(tiny_video_folder), "--upscale", "2"], "has no upscale stage"),
        (["--model", str(cascade), "--interpolate", "0"], "--interpolate 0 must be at least 1"),
        (["--model", str(cascade), "--num-frames", "1", "--upscale", "1"], "at least 2 frames"),
    ]
    for extra, message in cases:
        out = tmp_path / "x.gif"
        assert main(["generate", "a red circle", "-o", str(out), *extra, *FAST]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and not out.exists()


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("lowres") / "in.gif"
    write_video(render_clip("blue", "square", "up", num_frames=3, size=32, seed=0), path, fps=6)
    return path


def test_upscale_cli_writes_scale_times_larger_frames_at_the_same_fps(cascade, small_clip, tmp_path):
    out = tmp_path / "up.gif"
    assert main(["upscale", str(small_clip), "--scale", "2", "-o", str(out), "--model", str(cascade), *FAST]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (3, 64, 64, 3) and fps == pytest.approx(6, abs=0.5)
    out4 = tmp_path / "up4"
    assert main(["upscale", str(small_clip), "--scale", "4", "-o", str(out4), "--model", str(cascade),
                 "--window", "2", "--overlap", "1", *FAST]) == 0
    assert read_video(out4)[0].shape == (3, 128, 128, 3)  # two passes of the 2x stage, in windows of 2 frames


def test_upscale_cli_errors_are_one_line_with_exit_code_2(cascade, tiny_video_folder, small_clip, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    odd = tmp_path / "odd.gif"
    write_video(np.zeros((2, 30, 30, 3), dtype=np.uint8), odd, fps=4)
    out = tmp_path / "out.gif"
    cases = [
        ([str(small_clip), "--scale", "1", "--model", str(cascade)], "--scale 1 must be at least 2"),
        ([str(small_clip), "--scale", "3", "--model", str(cascade)], "not reachable"),
        ([str(small_clip), "--scale", "2", "--model", str(tiny_video_folder)], "has no upscale stage"),
        ([str(small_clip), "--scale", "2", "--model", str(cascade), "--noise-level", "400"], "--noise-level 400"),
        ([str(small_clip), "--scale", "2", "--model", str(cascade), "--window", "4", "--overlap", "4"], "--overlap"),
        ([str(bad), "--scale", "2", "--model", str(cascade)], "bad.mp4"),
        ([str(tmp_path / "missing.mp4"), "--scale", "2", "--model", str(cascade)], "missing.mp4"),
        ([str(odd), "--scale", "2", "--model", str(cascade)], "multiple of 4"),
    ]
    for args, message in cases:
        assert main(["upscale", *args, "-o", str(out), *FAST]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    out.write_bytes(b"an earlier clip")  # an existing output: refused before loading, unless --overwrite
    assert main(["upscale", str(small_clip), "--scale", "2", "--model", str(cascade), "-o", str(out), *FAST]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"an earlier clip"


def test_info_lists_the_cascade_stages(cascade, capsys):
    assert main(["info", str(cascade)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cascade"]["interpolation"]["factor"] == 2 and info["cascade"]["upscale"]["scale"] == 2
