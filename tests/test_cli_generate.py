"""`vidiff generate`: clips with sidecars, batches, seeds, 2-process runs, and one-line errors before heavy work."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidiff.cli import main
from vidiff.io.video import read_video

FAST = ["--num-frames", "3", "--steps", "2", "--no-progress"]


def test_generate_writes_a_clip_and_a_reproducible_sidecar(tiny_video_folder, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    argv = ["generate", "a red circle moving right", "--model", str(tiny_video_folder), "-o", str(out),
            "--seed", "5", "--fps", "6", "--negative-prompt", "blur", *FAST]
    assert main(argv) == 0
    frames, fps = read_video(out)
    assert frames.shape == (3, 64, 64, 3) and fps == pytest.approx(6, abs=0.1)
    sidecar = json.loads(Path(f"{out}.json").read_text())
    for key, value in dict(prompt="a red circle moving right", negative_prompt="blur", seed=5, steps=2,
                           guidance=7.5, scheduler="ddim", model=str(tiny_video_folder), num_frames=3, fps=6).items():
        assert sidecar[key] == value, key
    assert "vidiff_version" in sidecar and sidecar["timings"]["sample_s"] > 0 and sidecar["timings"]["load_s"] > 0


def test_guidance_defaults_to_the_model_folders_recommendation(tiny_video_folder, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_video_folder, model)
    (model / "sampling.json").write_text('{"guidance": 1.5}')
    for extra, expected in (([], 1.5), (["--guidance", "3"], 3.0)):
        out = tmp_path / f"clip{expected}.gif"
        assert main(["generate", "a red circle", "--model", str(model), "-o", str(out), "--seed", "1", *extra,
                     *FAST]) == 0
        assert json.loads(Path(f"{out}.json").read_text())["guidance"] == expected
    (model / "sampling.json").write_text('["not", "an", "object"]')
    assert main(["generate", "a red circle", "--model", str(model), "-o", str(tmp_path / "x.gif"), *FAST]) == 2
    assert "sampling.json must be a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists()


def test_same_seed_gives_the_same_frames(tiny_video_folder, tmp_path):
    for name in ("a", "b"):
        argv = ["generate", "a blue square", "--model", str(tiny_video_folder), "-o", str(tmp_path / name),
                "--seed", "11", *FAST]  # a suffix-less path is a folder of PNG frames: exact pixels
        assert main(argv) == 0
    first, _ = read_video(tmp_path / "a")
    second, _ = read_video(tmp_path / "b")
    assert np.array_equal(first, second)


def test_mkv_output_holds_exactly_the_png_frames(tiny_video_folder, tmp_path):
    for name in ("frames", "clip.mkv"):
        assert main(["generate", "a blue square", "--model", str(tiny_video_folder), "-o", str(tmp_path / name),
                     "--seed", "11", *FAST]) == 0
    assert np.array_equal(read_video(tmp_path / "clip.mkv")[0], read_video(tmp_path / "frames")[0])


def test_compile_flag_compiles_the_unet_and_keeps_the_frames(tiny_video_folder, tmp_path, monkeypatch):
    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    compiled = []
    original = TextToVideoPipeline.compile_unet

    def compile_unet(self, **options):  # dynamo's own tracing, without inductor's C++ build
        original(self, backend="eager")
        compiled.append(type(self.unet).__name__)
    monkeypatch.setattr(TextToVideoPipeline, "compile_unet", compile_unet)
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        argv = ["generate", "a blue square", "--model", str(tiny_video_folder), "-o", str(tmp_path / name),
                "--seed", "4", "--height", "128", "--width", "128", *extra, *FAST]
        assert main(argv) == 0
    assert compiled == ["OptimizedModule"]
    eager, _ = read_video(tmp_path / "eager")
    with_compile, _ = read_video(tmp_path / "compiled")
    assert np.array_equal(eager, with_compile)


def test_prompts_file_jsonl_writes_one_clip_each_with_its_own_seed(tiny_video_folder, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a red circle", "seed": 3}\n\n{"prompt": "a green square", "num_frames": 2}\n')
    out = tmp_path / "clips"
    assert main(["generate", "--prompts-file", str(prompts), "--model", str(tiny_video_folder), "-o",
                 str(out / "{index}-{seed}.gif"), "--seed", "100", *FAST]) == 0
    assert sorted(p.name for p in out.glob("*.gif")) == ["0-3.gif", "1-101.gif"]
    assert read_video(out / "1-101.gif")[0].shape[0] == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_split_the_prompts_and_write_each_clip_once(tiny_video_folder, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"prompt number {i}" for i in range(5)) + "\n")
    out = tmp_path / "clips"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "vidiff.cli", "generate",
               "--prompts-file", str(prompts), "--model", str(tiny_video_folder), "-o", str(out / "{index}.gif"),
               "--seed", "0", *FAST]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*.gif")) == [f"{i}.gif" for i in range(5)]
    wrote = [line for line in result.stdout.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == 5 and len(set(wrote)) == 5  # every clip written by exactly one process


def _fails_with(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err
    return err


def test_missing_model_folder(tmp_path, capsys):
    _fails_with(["generate", "x", "--model", str(tmp_path / "none"), "-o", str(tmp_path / "c.mp4")], capsys, "none")
    assert not (tmp_path / "c.mp4").exists()


def test_malformed_model_folder(tiny_sd_folder, tmp_path, capsys):
    # an image model, not a video model
    _fails_with(["generate", "x", "--model", str(tiny_sd_folder), "-o", str(tmp_path / "c.mp4")], capsys,
                "vidiff inflate")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--height", "60"], "height=60"),
        (["--width", "-8"], "width=-8"),
        (["--num-frames", "0"], "num_frames=0"),  # above max_frames runs in windows (test_free_noise.py)
        (["--scheduler", "plms"], "'plms'"),
        (["--steps", "0"], "steps=0"),
        (["--fps", "0"], "--fps 0"),
        (["--dtype", "fp8"], "'fp8'"),
        (["--threads", "0"], "--threads 0"),
    ],
)
def test_bad_settings(tiny_video_folder, tmp_path, capsys, extra, needle):
    _fails_with(["generate", "x", "--model", str(tiny_video_folder), "-o", str(tmp_path / "c.mp4"), *extra],
                capsys, needle)


def test_unknown_extension_and_unwritable_output(tiny_video_folder, tmp_path, capsys):
    _fails_with(["generate", "x", "--model", str(tiny_video_folder), "-o", str(tmp_path / "c.avi")], capsys, ".avi")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    _fails_with(["generate", "x", "--model", str(tiny_video_folder), "-o", str(blocker / "c.mp4")], capsys,
                "not a writable folder")


def test_existing_clip_is_untouched_when_input_is_bad(tiny_video_folder, tmp_path, capsys):
    clip = tmp_path / "c.mp4"
    clip.write_bytes(b"an earlier clip")
    _fails_with(["generate", "x", "--model", str(tiny_video_folder), "-o", str(clip), "--height", "7", "--overwrite"],
                capsys, "7")
    assert clip.read_bytes() == b"an earlier clip"


def test_empty_and_broken_prompts_files(tiny_video_folder, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    _fails_with(["generate", "--prompts-file", str(empty), "--model", str(tiny_video_folder)], capsys, "no prompts")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{"prompt": "x", "colour": 1}\n')
    _fails_with(["generate", "--prompts-file", str(broken), "--model", str(tiny_video_folder)], capsys,
                "broken.jsonl:2", "colour")


def test_prompt_and_prompts_file_together_or_neither(tiny_video_folder, capsys):
    _fails_with(["generate", "--model", str(tiny_video_folder)], capsys, "exactly one")


def test_one_file_for_many_prompts_is_refused(tiny_video_folder, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    _fails_with(["generate", "--prompts-file", str(prompts), "--model", str(tiny_video_folder), "-o",
                 str(tmp_path / "one.mp4")], capsys, "{index}")


def test_scheduler_names_checked_before_loading_match_the_pipeline():
    from vidiff.cli.jobs import SCHEDULER_NAMES
    from vidiff.pipelines.text_to_video import SCHEDULERS

    assert set(SCHEDULER_NAMES) == set(SCHEDULERS)


def test_help_and_input_checks_do_not_import_diffusers():
    """`vidiff --help` and a bad output path answer without loading the model libraries (seconds, not ~10 s)."""
    import subprocess
    import sys

    code = ("import sys; from vidiff.cli import main; "
            "rc = main(['generate', 'x', '-o', 'clip.xyz']); print(rc, 'diffusers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Existing outputs (issue 22, cases 1 and 2): refused before any sampling unless --overwrite
# ---------------------------------------------------------------------------------------------------------------

def test_an_existing_folder_with_the_users_files_is_refused_and_kept(tiny_video_folder, tmp_path, capsys):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep\n")
    for extra in ([], ["--overwrite"]):  # --overwrite replaces a frame folder, never a folder of other files
        _fails_with(["generate", "a red circle moving right", "--model", str(tiny_video_folder), "-o", str(folder),
                     *extra, *FAST], capsys, str(folder))
    assert [p.name for p in folder.iterdir()] == ["precious.txt"] and (folder / "precious.txt").read_text() == "keep\n"


def test_an_existing_clip_is_refused_unless_overwrite(tiny_video_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "clip.gif"
    argv = ["generate", "a red circle", "--model", str(tiny_video_folder), "-o", str(out), "--seed", "1", *FAST]
    assert main(argv) == 0
    capsys.readouterr()
    first = out.read_bytes(), Path(f"{out}.json").read_text()
    from vidiff.pipelines import text_to_video

    sampled = []
    monkeypatch.setattr(text_to_video.TextToVideoPipeline, "__call__", lambda *a, **k: sampled.append(1))
    _fails_with([*argv[:-len(FAST)], "--seed", "2", *FAST], capsys, "already exists", "--overwrite")
    assert not sampled and (out.read_bytes(), Path(f"{out}.json").read_text()) == first  # refused before sampling
    monkeypatch.undo()
    assert main([*argv, "--seed", "2", "--overwrite"]) == 0
    from vidiff.io.video import read_sidecar

    assert read_sidecar(out)["seed"] == 2 and out.read_bytes() != first[0]


def test_two_runs_with_one_output_end_with_one_error_and_one_intact_pair(tiny_video_folder, tmp_path):
    out = tmp_path / "clip.gif"
    command = [sys.executable, "-m", "vidiff.cli", "generate", "a red circle moving right", "--model",
               str(tiny_video_folder), "-o", str(out), *FAST]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([*command, "--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for seed in (1, 2)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    assert sorted(code for code, _, _ in results) == [0, 2], [r[2][-2000:] for r in results]
    err = next(err for code, _, err in results if code == 2).strip()  # after loading (progress bars), if both sampled
    assert err.splitlines()[-1].startswith("vidiff generate: error: ") and "already exists" in err.splitlines()[-1]
    assert "Traceback" not in err and err.count("error") == 1
    winner = (1, 2)[[code for code, _, _ in results].index(0)]
    from vidiff.io.video import read_sidecar

    assert read_sidecar(out)["seed"] == winner  # the sidecar's hash is the clip's: one intact pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "clip.gif.json"]
