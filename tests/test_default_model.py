"""The shipped default model: it loads offline from the package, stays small, and draws what the prompt names."""

import json
from pathlib import Path

import numpy as np
import torch

from vidiff.cli import main
from vidiff.eval.judge import judge_clip
from vidiff.io.video import read_video
from vidiff.pipelines.generate import DEFAULT_MODEL_DIR, default_model, recommended_guidance


def test_the_default_model_ships_inside_the_package_under_30_mb():
    assert default_model() == DEFAULT_MODEL_DIR and DEFAULT_MODEL_DIR.is_relative_to(Path(__file__).parents[1])
    weights = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.glob("*/*.safetensors"))
    assert 5e6 < weights < 30e6
    assert not list(DEFAULT_MODEL_DIR.rglob("*.bin")) and not list(DEFAULT_MODEL_DIR.rglob("*.pt"))
    assert recommended_guidance(DEFAULT_MODEL_DIR) == 1.5
    unet = json.loads((DEFAULT_MODEL_DIR / "unet" / "config.json").read_text())
    assert unet["_class_name"] == "VideoUNet" and unet["max_frames"] >= 16


def test_generate_without_model_writes_a_16_frame_64px_clip(tmp_path):
    out = tmp_path / "clip.mp4"
    assert main(["generate", "a red circle moving right", "-o", str(out), "--seed", "0", "--steps", "4",
                 "--no-progress"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (16, 64, 64, 3) and fps == 8
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["model"] == str(DEFAULT_MODEL_DIR) and sidecar["guidance"] == 1.5


def test_default_model_draws_the_named_colour_and_shape():
    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(DEFAULT_MODEL_DIR)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle moving right", "a blue square moving up", "a green triangle moving left",
               "a yellow circle moving down"]
    clips = pipe(prompts, num_frames=16, num_inference_steps=20, guidance_scale=1.5,
                 generator=[torch.Generator().manual_seed(k) for k in range(len(prompts))]).frames
    results = [judge_clip(clip, prompt) for clip, prompt in zip(clips, prompts)]
    assert sum(r["colour_ok"] and r["shape_ok"] for r in results) >= 3, results
    assert np.mean([r["single_object_fraction"] for r in results]) >= 0.9


def test_a_small_eval_of_the_default_model_completes_at_its_recommended_guidance(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["eval", "--split", "heldout", "--clips-per-combo", "1", "--frames", "4", "--steps", "2",
                 "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["settings"]["guidance"] == 1.5 and len(report["per_combo"]) == 8
    assert "held-out" in (out / "eval.md").read_text()
