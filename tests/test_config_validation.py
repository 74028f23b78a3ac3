"""Run configs and prompt files are parsed by pydantic (issue 22, case 4), and the low-severity inputs that used to
crash or write unusable output are one line with exit 2: seeds out of range, a frame size the VAE cannot take,
--max-frames 0, an already-inflated base."""

import json
import os
import subprocess
import sys

import pytest

from vidiff.cli import main
from vidiff.config import MAX_SEED, TrainConfig, load_config
from vidiff.errors import VidiffInputError


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("Loading weights")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith(f"vidiff {command}: error: "), err
    return lines[0]


def _child(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidiff.cli", *argv], capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize(("override", "expected"), [
    ("ema=false", False), ('ema="false"', False), ("ema=true", True), ("ema=yes", True),
    ("learning_rate=1e-4", 1e-4), ('max_steps="9"', 9), ("output=2024", "2024"), ("target_fps=null", None),
    ("keep_every=[2, 4]", [2, 4]), ("validation_prompts=[a red circle]", ["a red circle"]),
])
def test_yaml_values_become_the_fields_types(override, expected):
    key = override.split("=")[0]
    assert getattr(load_config(TrainConfig, None, [override]), key) == expected


@pytest.mark.parametrize(("override", "message"), [
    ("validation_prompts=a red circle", "validation_prompts='a red circle' is not a valid list[str]"),
    ("keep_every=4", "keep_every=4 is not a valid list[int]"),
    ("keep_every=[2, x]", "keep_every[1]='x' is not a valid int"),
    ("ema=maybe", "ema='maybe' is not a valid bool"),
    ("max_steps=2.5", "max_steps=2.5 is not a valid int"),
    ("learning_rate=fast", "learning_rate='fast' is not a valid float"),
])
def test_a_wrong_type_names_the_key_the_value_and_the_type(override, message):
    with pytest.raises(VidiffInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(TrainConfig, None, [override])


def test_wrong_types_in_a_config_file_are_one_line_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\ndata: d\nvalidation_prompts: a red circle\nkeep_every: 4\n")
    assert main(["train", "--config", str(path)]) == 2
    line = _error_line(capsys, "train")
    assert "validation_prompts='a red circle' is not a valid list[str]" in line and "keep_every=4" in line


def test_check_refuses_wrong_types_given_in_python():
    with pytest.raises(VidiffInputError, match="ema='false' is not a valid bool"):
        TrainConfig(model="m", data="d", ema="false").check()  # truthy text would have turned EMA on
    TrainConfig(model="m", data="d", learning_rate=1).check()  # an int is a float


def test_prompt_file_values_of_the_wrong_type_are_one_line(tiny_video_folder, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a red circle"}\n{"prompt": "a blue square", "num_frames": "abc"}\n')
    assert main(["generate", "--prompts-file", str(prompts), "--model", str(tiny_video_folder), "-o",
                 str(tmp_path / "{index}.gif")]) == 2
    assert f"{prompts}:2: num_frames='abc' is not a valid int" in _error_line(capsys, "generate")
    prompts.write_text('{"prompt": "a red circle", "guidance": "high", "steps": 2.5}\n')
    assert main(["generate", "--prompts-file", str(prompts), "--model", str(tiny_video_folder), "-o",
                 str(tmp_path / "{index}.gif")]) == 2
    line = _error_line(capsys, "generate")
    assert "guidance='high' is not a valid float" in line and "steps=2.5 is not a valid int" in line


@pytest.mark.parametrize("seed", [2**70, -1])
def test_seeds_out_of_range_are_one_line(tiny_video_folder, tmp_path, capsys, seed):
    argv = ["generate", "x", "--model", str(tiny_video_folder), "-o", str(tmp_path / "c.gif"), "--seed", str(seed)]
    assert main(argv) == 2
    assert f"--seed {seed} must be within 0..{MAX_SEED}" in _error_line(capsys, "generate")
    assert main(["train", f"model={tiny_video_folder}", f"data={tmp_path}", f"seed={seed}"]) == 2
    assert f"seed {seed} must be within" in _error_line(capsys, "train")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a red circle", "seed": seed}) + "\n")
    assert main(["generate", "--prompts-file", str(prompts), "--model", str(tiny_video_folder), "-o",
                 str(tmp_path / "{index}.gif")]) == 2
    assert f"seed of 'a red circle' {seed} must be within" in _error_line(capsys, "generate")
    assert not list(tmp_path.glob("*.gif"))


def test_the_largest_seed_works(tiny_video_folder, tmp_path):
    assert main(["generate", "x", "--model", str(tiny_video_folder), "-o", str(tmp_path / "c.gif"), "--seed",
                 str(MAX_SEED), "--num-frames", "2", "--steps", "1", "--no-progress"]) == 0


def test_a_training_resolution_the_vae_cannot_take_is_one_line_in_a_child_process(tiny_video_folder, tmp_path):
    """It used to fail inside the VAE with a kernel-size RuntimeError traceback."""
    clips = tmp_path / "clips"
    clips.mkdir()
    from vidiff.data.shapes import render_clip
    from vidiff.io.video import write_video

    write_video(render_clip("red", "circle", "right", num_frames=8, size=48, seed=0), clips / "a.mp4", fps=8)
    result = _child("train", f"model={tiny_video_folder}", f"data={clips}", f"output={tmp_path / 'run'}",
                    "resolution=7", "num_frames=4", "max_steps=1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "resolution=7 must be a positive multiple of 8" in result.stderr and "Traceback" not in result.stderr


def test_inflate_refuses_zero_frames_and_heads_that_do_not_divide_the_widths(tiny_sd_folder, tmp_path, capsys):
    for extra, message in ((["--max-frames", "0"], "max_frames=0 must be a whole number of at least 1"),
                           (["--temporal-heads", "3"], "temporal_num_attention_heads=3 must divide every block")):
        assert main(["inflate", "--base", str(tiny_sd_folder), "--out", str(tmp_path / "out"), *extra]) == 2
        assert message in _error_line(capsys, "inflate")
        assert not (tmp_path / "out").exists()


def test_inflating_an_inflated_model_is_one_line_in_a_child_process(tiny_video_folder, tmp_path):
    """It used to load for 30 s and end in a meta-tensor traceback."""
    result = _child("inflate", "--base", str(tiny_video_folder), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "is a video model already" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
