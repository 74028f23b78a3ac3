"""A run's output folder across runs (issue 22): an earlier run is never overwritten by accident, a resume that would
compute something else is refused in one line, harmless changes are recorded, killed writers' leftovers go."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidiff.cli import main
from vidiff.data.shapes import render_clip
from vidiff.io.video import write_video
from vidiff.training.resume import HISTORY_FILE, read_history

TINY = ["num_frames=4", "frame_stride=1", "resolution=32", "batch_size=1", "log_every=1", "learning_rate=1e-3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for i, (colour, shape, direction) in enumerate([("red", "circle", "right"), ("blue", "square", "up")]):
        write_video(render_clip(colour, shape, direction, num_frames=8, size=48, seed=i), folder / f"c{i}.mp4", fps=8)
    return folder


@pytest.fixture(scope="module")
def stopped_run(tiny_video_folder, data, tmp_path_factory):
    """A run of 4 steps killed after its step-2 checkpoint (written with ema: true)."""
    from vidiff.config import TrainConfig, load_config
    from vidiff.training.trainer import train

    out = tmp_path_factory.mktemp("runs") / "run"
    config = load_config(TrainConfig, None, _args(tiny_video_folder, data, out, "max_steps=4", "checkpoint_every=2",
                                                  "ema=true"))
    train(config, stop_after=2)
    return out


def _args(model, data, out, *extra):
    return [f"model={model}", f"data={data}", f"output={out}", *TINY, *extra]


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _one_line(capsys) -> str:
    """The error line, after any progress bars of model loading (stderr too)."""
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("Loading weights")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("vidiff train: error: "), err
    return lines[0]


def test_a_new_run_refuses_an_output_that_holds_a_run(tiny_video_folder, data, stopped_run, tmp_path, capsys):
    run = _copy(stopped_run, tmp_path)
    (run / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["train", *_args(tiny_video_folder, data, run, "max_steps=4", "checkpoint_every=2", "ema=true")]) == 2
    err = _one_line(capsys)
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    # --overwrite starts over: the earlier run's files go, the user's stay
    assert main(["train", *_args(tiny_video_folder, data, run, "max_steps=1", "checkpoint_every=5"),
                 "--overwrite"]) == 0
    assert "removed the earlier run's" in capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "mine"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000001"]
    assert [entry["event"] for entry in read_history(run)] == ["start"]


@pytest.mark.parametrize("change", ["batch_size=2", "seed=5", "num_frames=3", "resolution=64", "ema=false",
                                    "learning_rate=0.01"])
def test_a_resume_that_would_compute_something_else_is_refused(tiny_video_folder, data, stopped_run, tmp_path,
                                                               capsys, change):
    run = _copy(stopped_run, tmp_path)
    config_before = (run / "config.json").read_text()
    argv = ["train", *_args(tiny_video_folder, data, run, "max_steps=4", "checkpoint_every=2", "ema=true", change),
            "--resume"]
    assert main(argv) == 2
    err = _one_line(capsys)
    key, new = change.split("=")
    old = json.loads(config_before)[key]
    assert f"{key} {old!r} -> " in err and "would change what it computes" in err, err
    assert (run / "config.json").read_text() == config_before  # the original settings are kept
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002"]


def test_a_resume_lists_every_changed_setting_in_one_line(tiny_video_folder, data, stopped_run, tmp_path, capsys):
    run = _copy(stopped_run, tmp_path)
    assert main(["train", *_args(tiny_video_folder, data, run, "max_steps=4", "checkpoint_every=2", "ema=true",
                                 "batch_size=2", "seed=7", "resolution=64"), "--resume"]) == 2
    err = _one_line(capsys)
    assert "batch_size 1 -> 2" in err and "seed 0 -> 7" in err and "resolution 32 -> 64" in err


def test_changing_trainable_on_resume_is_refused_in_a_child_process(tiny_video_folder, data, stopped_run, tmp_path):
    """It used to end in a KeyError traceback (the checkpoint holds other weights)."""
    run = _copy(stopped_run, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "vidiff.cli", "train",
         *_args(tiny_video_folder, data, run, "max_steps=4", "checkpoint_every=2", "ema=true", "trainable=all"),
         "--resume"], capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "trainable 'temporal' -> 'all'" in result.stderr and "Traceback" not in result.stderr


def test_harmless_changes_continue_and_are_recorded_in_the_history(tiny_video_folder, data, stopped_run, tmp_path,
                                                                   capsys):
    run = _copy(stopped_run, tmp_path)
    config_before = (run / "config.json").read_text()
    assert main(["train", *_args(tiny_video_folder, data, run, "max_steps=5", "checkpoint_every=1", "ema=true",
                                 "log_every=2"), "--resume"]) == 0
    assert (run / "config.json").read_text() == config_before
    history = read_history(run)
    assert [entry["event"] for entry in history] == ["start", "resume"]
    assert history[1]["step"] == 2 and history[1]["checkpoint"].endswith("step-00000002")
    changed = history[1]["changed"]
    assert changed.pop("output") == [str(stopped_run), str(run)]  # the run was moved (copied here): recorded too
    assert changed == {"max_steps": [4, 5], "checkpoint_every": [2, 1], "log_every": [1, 2]}
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 5
    # each checkpoint records the settings it was written under, so a second resume compares with those
    state = json.loads((run / "checkpoints" / "step-00000005" / "state.json").read_text())
    assert state["config"]["max_steps"] == 5 and (run / HISTORY_FILE).is_file()


def test_nothing_to_resume_says_how_to_start_over(tiny_video_folder, data, tmp_path, capsys):
    assert main(["train", *_args(tiny_video_folder, data, tmp_path / "new"), "--resume"]) == 2
    assert "nothing to resume" in _one_line(capsys)


def test_leftover_temporaries_of_killed_writers_are_removed_on_start_and_resume(tiny_video_folder, data, stopped_run,
                                                                                tmp_path, capsys):
    from vidiff.atomic import _host

    run = _copy(stopped_run, tmp_path)
    dead = _dead_pid()
    leftovers = [run / "checkpoints" / f".step-00000004~{_host()}~{dead}~abc123.tmp",  # killed mid-checkpoint
                 run / f".model~{_host()}~{dead}~x1y2z3.tmp",  # killed during the final write
                 run / ".model.k9j8h7.tmp"]  # named before writers were recorded, and old
    for folder in leftovers:
        folder.mkdir()
        (folder / "trainable.safetensors").write_bytes(b"\0" * 1_000_000)
    old = os.stat(leftovers[2]).st_mtime - 2 * 3600
    os.utime(leftovers[2], (old, old))
    live = run / "checkpoints" / f".step-00000006~{_host()}~{os.getpid()}~live00.tmp"  # a writer still running
    live.mkdir()
    assert main(["train", *_args(tiny_video_folder, data, run, "max_steps=4", "checkpoint_every=2", "ema=true"),
                 "--resume"]) == 0
    err = capsys.readouterr().err
    assert "removed 3 leftover temporaries of killed writers (3.0 MB)" in err
    assert not any(path.exists() for path in leftovers) and live.is_dir()
    leftover = run / "validation" / f".step-00000002-00-seed0.gif~{_host()}~{dead}~abcdef.tmp.gif"
    leftover.parent.mkdir()
    leftover.write_bytes(b"GIF8")
    assert main(["train", *_args(tiny_video_folder, data, tmp_path / "other", "max_steps=1")]) == 0  # a new run
    assert leftover.exists()  # another run's folder is not touched
    assert main(["train", *_args(tiny_video_folder, data, run, "max_steps=4", "checkpoint_every=2", "ema=true"),
                 "--resume"]) == 0
    assert not leftover.exists() and "removed 1 leftover temporary" in capsys.readouterr().err


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("damage", ["optimizer.pt", "trainable.safetensors", "ema.safetensors"])
def test_a_checkpoint_file_that_will_not_load_is_one_line(tiny_video_folder, data, stopped_run, tmp_path, capsys,
                                                          damage):
    run = _copy(stopped_run, tmp_path)
    path = run / "checkpoints" / "step-00000002" / damage
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["train", *_args(tiny_video_folder, data, run, "max_steps=4", "checkpoint_every=2", "ema=true"),
                 "--resume"]) == 2
    err = _one_line(capsys)
    assert f"{path}: not a readable" in err, err


def test_an_optimizer_state_of_other_parameters_is_one_line(tiny_video_folder, data, stopped_run, tmp_path, capsys):
    run = _copy(stopped_run, tmp_path)
    path = run / "checkpoints" / "step-00000002" / "optimizer.pt"
    state = torch.load(path, weights_only=True)
    state["optimizer"]["param_groups"].append(dict(state["optimizer"]["param_groups"][0], params=[10_000]))
    torch.save(state, path)
    assert main(["train", *_args(tiny_video_folder, data, run, "max_steps=4", "checkpoint_every=2", "ema=true"),
                 "--resume"]) == 2
    assert "optimizer state of other parameter groups" in _one_line(capsys)


def test_trained_weights_get_the_umasks_permissions_and_identical_runs_identical_bytes(tiny_video_folder, data,
                                                                                       tmp_path):
    old = os.umask(0o022)
    try:
        for name in ("a", "b"):
            assert main(["train", *_args(tiny_video_folder, data, tmp_path / name, "max_steps=1")]) == 0
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "a").rglob("*.safetensors")]
    assert written and all(p.stat().st_mode & 0o777 == 0o644 for p in written), \
        {str(p): oct(p.stat().st_mode & 0o777) for p in written}
    a, b = ((tmp_path / name / "temporal.safetensors").read_bytes() for name in ("a", "b"))
    assert a == b
    assert load_file(tmp_path / "a" / "temporal.safetensors").keys()
