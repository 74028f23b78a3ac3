"""scripts/tiny_default/ship.py: a new base model replaces the default; its later stages keep their text encoder
and scheduler."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTextModel

from vidiff.pipelines.cascade import load_stage, read_cascade
from vidiff.pipelines.text_to_video import TextToVideoPipeline

SCRIPT = Path(__file__).parents[1] / "scripts" / "tiny_default" / "ship.py"


def _ship_module():
    spec = importlib.util.spec_from_file_location("ship", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "text_encoder" / "model.safetensors")


def _train_text_encoder_further(folder: Path) -> None:
    """Stand-in for a text encoder trained further: every weight of folder's encoder moved by 0.01."""
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    with torch.no_grad():
        for param in encoder.parameters():
            param.add_(0.01)
    encoder.save_pretrained(folder / "text_encoder")


def test_a_new_text_encoder_and_scheduler_leave_each_stage_the_ones_it_was_trained_with(tiny_video_folder, tmp_path, monkeypatch):
    # the current default: a video model with an interpolation stage that has no text encoder of its own
    current = tmp_path / "default-model"
    shutil.copytree(tiny_video_folder, current)
    shutil.copytree(tiny_video_folder / "unet", current / "interpolation" / "unet")
    (current / "cascade.json").write_text(json.dumps({"interpolation": {"path": "interpolation", "factor": 4}}))
    old = _weights(current)

    # a new base model whose text encoder was trained further
    new = tmp_path / "new-model"
    shutil.copytree(tiny_video_folder, new)
    _train_text_encoder_further(new)
    config = json.loads((new / "scheduler" / "scheduler_config.json").read_text())
    (new / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "prediction_type": "v_prediction"}))

    ship = _ship_module()
    monkeypatch.setattr(ship, "DEFAULT_MODEL_DIR", current)
    monkeypatch.setattr(ship, "MAX_BYTES", 10**9)  # the test model is SD-shaped, not the shipped size
    ship.main([str(new), "--note", "test"])

    # the base now conditions with the new encoder, the stage with the old one, also when loaded for sampling
    for key, value in _weights(new).items():
        torch.testing.assert_close(_weights(current)[key], value, rtol=0, atol=0)
    stage = read_cascade(current)["interpolation"]
    for key, value in old.items():
        torch.testing.assert_close(_weights(stage.path)[key], value, rtol=0, atol=0)
    pipe = load_stage(current, stage, TextToVideoPipeline, torch.device("cpu"), torch.float32)
    loaded = pipe.text_encoder.state_dict()
    for key, value in old.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert not torch.equal(loaded[key], _weights(current)[key])

    assert pipe.scheduler.config.prediction_type == "epsilon"  # the stage samples as it was trained
    assert json.loads((current / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"

    # shipping a base with the same text encoder again adds nothing and keeps the stage's own encoder
    ship.main([str(new)])
    for key, value in old.items():
        torch.testing.assert_close(_weights(stage.path)[key], value, rtol=0, atol=0)


def test_an_unchanged_text_encoder_and_scheduler_give_the_stages_none_of_their_own(tiny_video_folder, tmp_path, monkeypatch):
    current = tmp_path / "default-model"
    shutil.copytree(tiny_video_folder, current)
    shutil.copytree(tiny_video_folder / "unet", current / "interpolation" / "unet")
    (current / "cascade.json").write_text(json.dumps({"interpolation": {"path": "interpolation", "factor": 4}}))
    ship = _ship_module()
    monkeypatch.setattr(ship, "DEFAULT_MODEL_DIR", current)
    monkeypatch.setattr(ship, "MAX_BYTES", 10**9)  # the test model is SD-shaped, not the shipped size
    ship.main([str(tiny_video_folder)])
    assert (current / "interpolation" / "unet" / "config.json").is_file()
    assert not (current / "interpolation" / "text_encoder").exists()
    assert not (current / "interpolation" / "scheduler").exists()


def test_a_default_that_its_stages_take_over_the_cap_is_refused_and_the_current_one_kept(tiny_video_folder, tmp_path, monkeypatch):
    current = tmp_path / "default-model"
    shutil.copytree(tiny_video_folder, current)
    shutil.copytree(tiny_video_folder / "unet", current / "interpolation" / "unet")
    (current / "cascade.json").write_text(json.dumps({"interpolation": {"path": "interpolation", "factor": 4}}))
    before = {p.relative_to(current): p.read_bytes() for p in current.rglob("*") if p.is_file()}
    new = tmp_path / "new-model"
    shutil.copytree(tiny_video_folder, new)
    _train_text_encoder_further(new)  # so the stage must keep a copy of the current one
    base = sum(p.stat().st_size for p in new.glob("*/*.safetensors"))
    stage = sum(p.stat().st_size for p in (current / "interpolation").rglob("*.safetensors"))

    ship = _ship_module()
    monkeypatch.setattr(ship, "DEFAULT_MODEL_DIR", current)
    monkeypatch.setattr(ship, "MAX_BYTES", base + stage)  # the base and stage fit; the stage's kept copies do not
    with pytest.raises(SystemExit, match="left as it was"):
        ship.main([str(new)])
    after = {p.relative_to(current): p.read_bytes() for p in current.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no half-built folder left
