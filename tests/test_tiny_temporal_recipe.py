"""The tiny default's temporal recipe (scripts/tiny_default/train_temporal.py): the switch to a zero-terminal-SNR,
v-prediction schedule between its two phases."""

import importlib.util
import json
from pathlib import Path

import torch
from diffusers import DDIMScheduler

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tiny_default" / "train_temporal.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("train_temporal", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zero_terminal_snr_copy_leaves_no_signal_at_the_last_step_and_still_samples(tiny_video_folder, tmp_path):
    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    recipe = _load_script()
    target = recipe.zero_terminal_snr_copy(tiny_video_folder, tmp_path / "switched")
    original = DDIMScheduler.from_pretrained(tiny_video_folder / "scheduler")
    switched = DDIMScheduler.from_pretrained(target / "scheduler")
    assert original.alphas_cumprod[-1] > 1e-3  # SD's schedule: some signal survives at t=999
    assert switched.alphas_cumprod[-1] < 1e-12 and switched.config.prediction_type == "v_prediction"
    switched.set_timesteps(4)
    assert switched.timesteps[0] == 999  # trailing: sampling starts from the pure-noise step
    # the source folder is untouched, and the copy samples finite frames with every scheduler
    assert json.loads((tiny_video_folder / "scheduler" / "scheduler_config.json").read_text())[
        "prediction_type"] == "epsilon"
    pipe = TextToVideoPipeline.from_pretrained(target)
    pipe.set_progress_bar_config(disable=True)
    for name in ("ddim", "dpm++", "euler"):
        pipe.set_scheduler(name)
        frames = pipe("a red circle", num_frames=2, num_inference_steps=3, output_type="pt",
                      generator=torch.Generator().manual_seed(0)).frames
        assert torch.isfinite(frames).all(), name
