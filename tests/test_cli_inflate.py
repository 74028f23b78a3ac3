"""`vidiff inflate` and `vidiff info`: a complete folder that loads back, and one-line errors with exit code 2."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import frame_by_frame, video_inputs
from diffusers import UNet2DConditionModel

from vidiff.cli import main
from vidiff.models.video_unet import VideoUNet


def test_inflate_writes_a_complete_folder_that_loads_back(tiny_sd_folder, tmp_path):
    out = tmp_path / "video-model"
    result = subprocess.run(
        [sys.executable, "-m", "vidiff.cli", "inflate", "--base", str(tiny_sd_folder), "--out", str(out),
         "--max-frames", "16"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"
    ]
    assert json.loads((out / "model_index.json").read_text())["unet"] == ["vidiff", "VideoUNet"]

    video = VideoUNet.from_pretrained(out / "unet").eval()
    unet2d = UNet2DConditionModel.from_pretrained(tiny_sd_folder / "unet").eval()
    assert video.config.max_frames == 16
    sample, timestep, text, _ = video_inputs(dict(unet2d.config), batch=1, frames=3)
    with torch.no_grad():
        torch.testing.assert_close(
            video(sample, timestep, text).sample, frame_by_frame(unet2d, sample, timestep, text), atol=1e-5, rtol=1e-5
        )


def test_info_reports_temporal_parameter_counts(tiny_sd_folder, tmp_path, capsys):
    assert main(["inflate", "--base", str(tiny_sd_folder), "--out", str(tmp_path / "m"), "--no-temporal-conv"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["temporal_conv_parameters"] == 0 and info["temporal_attention_parameters"] > 0


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    return err


def test_missing_base_is_exit_2(tmp_path, capsys):
    assert main(["inflate", "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "nope" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_base_without_a_component_names_it(tiny_sd_folder, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_folder, broken)
    shutil.rmtree(broken / "vae")
    assert main(["inflate", "--base", str(broken), "--out", str(tmp_path / "out")]) == 2
    assert "vae/" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_and_left_untouched(tiny_sd_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["inflate", "--base", str(tiny_sd_folder), "--out", str(out)]) == 2
    assert "--overwrite" in _error_line(capsys)
    assert (out / "precious.txt").read_text() == "keep me"
    # --overwrite replaces a model folder, never a folder of other files (issue 22)
    assert main(["inflate", "--base", str(tiny_sd_folder), "--out", str(out), "--overwrite"]) == 2
    assert "not replaced even with --overwrite" in _error_line(capsys)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


@pytest.mark.parametrize("name", ["model.ckpt", "model.safetensors"])
def test_unconvertible_single_file_is_exit_2(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(b"not a checkpoint")
    assert main(["inflate", "--base", str(path), "--out", str(tmp_path / "out")]) == 2
    assert name in _error_line(capsys)


def test_info_on_a_plain_image_model_is_exit_2(tiny_sd_folder, capsys):
    assert main(["info", str(tiny_sd_folder)]) == 2
    assert "vidiff inflate" in _error_line(capsys)


@pytest.mark.parametrize("command", [[], ["inflate"], ["info"]])
def test_help_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: vidiff" in capsys.readouterr().out
