"""Weights files the user supplied that will not load (issue 22, case 5): one line naming the file and what is wrong,
exit 2, in generate, inflate, train and info; a pickle never runs. And equal weights give equal bytes."""

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidiff.cli import main
from vidiff.errors import VidiffInputError
from vidiff.weights import find_broken_weights, read_weights, save_safetensors

UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


class RunsCode:
    """A pickle that runs code when loaded without weights_only: it would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _truncated(folder: Path, tmp_path: Path, part: Path = UNET_WEIGHTS) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    data = (copy / part).read_bytes()
    (copy / part).write_bytes(data[: len(data) // 3])
    return copy


def _booby_trapped(folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    copy, marker = tmp_path / "model", tmp_path / "pickle-ran"
    shutil.copytree(folder, copy)
    (copy / UNET_WEIGHTS).unlink()  # diffusers then looks for the pickled .bin
    with open(copy / "unet" / "diffusion_pytorch_model.bin", "wb") as file:
        pickle.dump({"weight": RunsCode(marker)}, file)
    return copy, marker


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("Loading weights")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith(f"vidiff {command}: error: "), err
    return lines[0]


def test_generate_with_a_truncated_weights_file_exits_2_naming_it_in_a_child_process(tiny_video_folder, tmp_path):
    model = _truncated(tiny_video_folder, tmp_path)
    result = subprocess.run([sys.executable, "-m", "vidiff.cli", "generate", "a red circle", "--model", str(model),
                             "-o", str(tmp_path / "c.gif"), "--num-frames", "2", "--steps", "1", "--no-progress"],
                            capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"{model / UNET_WEIGHTS}: not a readable safetensors file" in result.stderr
    assert not (tmp_path / "c.gif").exists()


@pytest.mark.parametrize("part", [UNET_WEIGHTS, Path("vae") / "diffusion_pytorch_model.safetensors",
                                  Path("text_encoder") / "model.safetensors"])
def test_train_and_info_name_the_broken_file(tiny_video_folder, tmp_path, capsys, part):
    model = _truncated(tiny_video_folder, tmp_path, part)
    assert main(["train", f"model={model}", f"data={tmp_path}", f"output={tmp_path / 'run'}", "max_steps=1"]) == 2
    assert f"{model / part}: not a readable safetensors file" in _error_line(capsys, "train")
    if part == UNET_WEIGHTS:
        assert main(["info", str(model)]) == 2
        assert f"{model / part}: not a readable safetensors file" in _error_line(capsys, "info")


def test_inflate_refuses_a_base_with_a_broken_file_and_writes_nothing(tiny_sd_folder, tmp_path, capsys):
    for part in (UNET_WEIGHTS, Path("text_encoder") / "model.safetensors"):  # the latter is only copied
        base = _truncated(tiny_sd_folder, tmp_path / part.parts[0], part)
        assert main(["inflate", "--base", str(base), "--out", str(tmp_path / "out")]) == 2
        assert f"{base / part}: not a readable safetensors file" in _error_line(capsys, "inflate")
        assert not (tmp_path / "out").exists()


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tiny_video_folder, tmp_path, capsys):
    model, marker = _booby_trapped(tiny_video_folder, tmp_path)
    assert main(["info", str(model)]) == 2
    assert "a pickle that holds more than tensors, so it is not loaded" in _error_line(capsys, "info")
    assert main(["generate", "x", "--model", str(model), "-o", str(tmp_path / "c.gif"), "--num-frames", "2",
                 "--steps", "1", "--no-progress"]) == 2
    assert "diffusion_pytorch_model.bin: a pickle" in _error_line(capsys, "generate")
    assert not marker.exists()


def test_find_broken_weights_and_read_weights(tmp_path):
    save_safetensors({"w": torch.ones(3)}, tmp_path / "ok.safetensors")
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.bin")
    assert find_broken_weights(tmp_path) is None
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert find_broken_weights(tmp_path) == (tmp_path / "empty.safetensors", "empty file (0 bytes)")
    data = (tmp_path / "ok.bin").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(VidiffInputError, match=r"half.pt: not a readable weights file"):
        read_weights(tmp_path / "half.pt", lambda p: torch.load(p, weights_only=True))


SAVE = """
import sys, torch
from safetensors.torch import save_file
from vidiff.weights import save_safetensors
tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.float16)}
metadata = {"format": "vidiff.temporal.v1", "config": '{"max_frames": 16}', "note": "x"}
save_file(tensors, sys.argv[1] + "/raw.safetensors", metadata=metadata)
save_safetensors(tensors, sys.argv[1] + "/sorted.safetensors", metadata)
"""


def test_equal_weights_give_equal_bytes_across_processes(tmp_path):
    digests = {"raw": set(), "sorted": set()}
    for run in range(6):
        folder = tmp_path / str(run)
        folder.mkdir()
        subprocess.run([sys.executable, "-c", SAVE, str(folder)], check=True, timeout=120)
        for name in digests:
            digests[name].add(hashlib.sha256((folder / f"{name}.safetensors").read_bytes()).hexdigest())
    assert len(digests["sorted"]) == 1  # (safetensors' own header order varies by process: digests["raw"])
    from safetensors import safe_open

    with safe_open(str(tmp_path / "0" / "sorted.safetensors"), framework="pt") as file:
        assert file.metadata()["config"] == '{"max_frames": 16}' and sorted(file.keys()) == ["a", "b"]
