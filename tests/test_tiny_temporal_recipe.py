"""The tiny default's temporal recipe (scripts/tiny_default/train_temporal.py): the switch to a zero-terminal-SNR,
v-prediction schedule between its two phases."""

import importlib.util
import json
from pathlib import Path

import pytest
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


def test_a_phase_cut_short_becomes_its_checkpoints_ema_model(tiny_video_folder, tmp_path):
    from safetensors.torch import load_file

    from vidiff.data.shapes import caption, render_clip
    from vidiff.io.video import write_video
    from vidiff.models.temporal import temporal_named_parameters
    from vidiff.models.video_unet import VideoUNet
    from vidiff.training.checkpoints import checkpoint_dir

    recipe = _load_script()
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, direction in enumerate(("left", "up")):
        write_video(render_clip("red", "circle", direction, num_frames=4, size=32, seed=i), clips / f"c{i}.mp4", fps=8)
        (clips / f"c{i}.txt").write_text(caption("red", "circle", direction))
    tiny = ["num_frames=4", "resolution=32", "batch_size=1", "max_steps=10", "checkpoint_every=100",
            "learning_rate=1e-2", "lr_warmup_steps=0", "ema_decay=0.5"]
    model = recipe.run_phase("tiny_default_temporal.yaml", tiny_video_folder, clips, tmp_path / "phase", False, tiny,
                             stop_after=2)

    assert model == tmp_path / "phase" / "model" and not (tmp_path / "phase" / "temporal.safetensors").exists()
    ema = load_file(checkpoint_dir(tmp_path / "phase", 2) / "ema.safetensors")
    saved = dict(VideoUNet.from_pretrained(model / "unet").named_parameters())
    before = dict(VideoUNet.from_pretrained(tiny_video_folder / "unet").named_parameters())
    assert set(ema) == set(saved)
    assert all(torch.equal(saved[name], ema[name]) for name in ema)
    assert any(not torch.equal(saved[name], before[name]) for name in ema)  # the two steps changed it
    assert (model / "text_encoder").is_dir() and (model / "model_index.json").is_file()

    # the phase is done: a second call returns the folder without training
    assert recipe.run_phase("tiny_default_temporal.yaml", tiny_video_folder, clips, tmp_path / "phase", False,
                            tiny, stop_after=2) == model
    # a run that trained the temporal layers only: those come from its EMA, every other weight from the source
    only = recipe.run_phase("tiny_default_temporal.yaml", tiny_video_folder, clips, tmp_path / "temporal", False,
                            [*tiny, "trainable=temporal"], stop_after=2)
    ema = load_file(checkpoint_dir(tmp_path / "temporal", 2) / "ema.safetensors")
    unet = VideoUNet.from_pretrained(only / "unet")
    saved = dict(unet.named_parameters())
    assert set(ema) == {name for name, _ in temporal_named_parameters(unet)} and set(ema) < set(saved)
    assert all(torch.equal(saved[name], ema[name]) for name in ema)
    assert all(torch.equal(saved[name], before[name]) for name in saved if name not in ema)
    assert any(not torch.equal(saved[name], before[name]) for name in ema)

    # a checkpoint without EMA weights cannot become a model
    with pytest.raises(ValueError, match="EMA"):
        recipe.run_phase("tiny_default_temporal.yaml", tiny_video_folder, clips, tmp_path / "plain", False,
                         [*tiny, "ema=false"], stop_after=1)
    assert not (tmp_path / "plain" / "model").exists()
