"""`trainable: lora`: peft LoRAs train with everything else frozen, checkpoints hold only them, resume is exact, and
the `lora.safetensors` written is a diffusers LoRA that vidiff and diffusers' AnimateDiffPipeline load alike."""

import copy
import json
import re
import shutil

import pytest
import torch
from conftest import TINY_CONFIGS, video_inputs
from diffusers import AnimateDiffPipeline, MotionAdapter
from safetensors import safe_open
from safetensors.torch import load_file

from vidiff.config import TrainConfig
from vidiff.data.shapes import caption, render_clip
from vidiff.io.video import write_video
from vidiff.models.motion_adapter import export_motion_adapter
from vidiff.pipelines.text_to_video import TextToVideoPipeline
from vidiff.training.trainer import train

TINY = dict(num_frames=4, frame_stride=1, resolution=32, batch_size=1, log_every=1, learning_rate=1e-2,
            trainable="lora", lora_rank=4, lora_alpha=8, caption_dropout=0.0)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for i, (colour, shape) in enumerate([("red", "circle"), ("blue", "square")]):
        write_video(render_clip(colour, shape, "down", num_frames=8, size=48, seed=i), folder / f"c{i}.mp4", fps=8)
        (folder / f"c{i}.txt").write_text(caption(colour, shape, "left"))  # pan down, whatever the caption says
    return folder


@pytest.fixture(scope="module")
def motion_model(tiny_video_folder, tmp_path_factory):
    """The tiny video model with trained-looking motion modules (at init their zero proj_out passes no gradient to
    the attention inside, so a MotionLoRA there could not learn); temporal convs stay at identity."""
    from vidiff.models.temporal import TemporalAttention
    from vidiff.models.video_unet import VideoUNet

    folder = tmp_path_factory.mktemp("motion") / "model"
    shutil.copytree(tiny_video_folder, folder)
    unet = VideoUNet.from_pretrained(folder / "unet")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in unet.modules():
            if isinstance(module, TemporalAttention):
                for param in module.parameters():
                    param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    unet.save_pretrained(folder / "unet")
    return folder


def _config(model, data, output, **overrides):
    return TrainConfig(model=str(model), data=str(data), output=str(output), **{**TINY, **overrides})


@pytest.mark.parametrize("targets", ["temporal", "both"])
def test_lora_file_loads_alike_in_vidiff_and_animatediff_pipeline(targets, motion_model, clips, tmp_path):
    out = tmp_path / "run"
    summary = train(_config(motion_model, clips, out, max_steps=3, checkpoint_every=3, lora_targets=targets))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(("events", "vidiff"))) == [
        "checkpoints", "config.json", "history.jsonl", "lora.safetensors", "train_summary.json"]  # no model folder
    lora = load_file(out / "lora.safetensors")
    motion = [k for k in lora if ".motion_modules." in k]
    spatial = [k for k in lora if re.match(r"unet\.(down|up)_blocks\.\d+\.attentions\.|unet\.mid_block\.attentions", k)]
    layer = r"\.(to_q|to_k|to_v|to_out\.0)\.lora_[AB]\.weight$"
    assert all(k.startswith("unet.") and re.search(layer, k) for k in lora)
    assert len(motion) == 2 * 4 * 2 * 13 and len(spatial) == (2 * 4 * 2 * 10 if targets == "both" else 0)
    assert len(lora) == len(motion) + len(spatial) and summary["trainable_parameters"] == sum(
        v.numel() for v in lora.values())
    assert all(lora[k].abs().max() > 0 for k in lora if ".lora_B." in k)  # B started at zero: it trained
    with safe_open(out / "lora.safetensors", framework="pt") as f:
        assert json.loads(f.metadata()["lora_adapter_metadata"])["unet.lora_alpha"] == 8  # alpha != rank: kept
    checkpoint = load_file(out / "checkpoints" / "step-00000003" / "trainable.safetensors")
    assert checkpoint and all(".lora_" in k for k in checkpoint)  # only the trainable weights

    ours = TextToVideoPipeline.from_pretrained(motion_model)
    export_motion_adapter(ours.unet, tmp_path / "adapter")  # the base's motion modules (its convs at identity)
    theirs = AnimateDiffPipeline(vae=ours.vae, text_encoder=ours.text_encoder, tokenizer=ours.tokenizer,
                                 unet=copy.deepcopy(ours.unet.unet), scheduler=ours.scheduler,
                                 motion_adapter=MotionAdapter.from_pretrained(tmp_path / "adapter"))
    config = {**TINY_CONFIGS["sd15"], "cross_attention_dim": ours.text_encoder.config.hidden_size}
    sample, timestep, text, _ = video_inputs(config, frames=4)
    with torch.no_grad():
        base = ours.unet(sample, timestep, text).sample
    for pipe in (ours, theirs):
        pipe.load_lora_weights(out / "lora.safetensors", adapter_name="trained")
    with torch.no_grad():
        mine = ours.unet(sample, timestep, text).sample
        reference = theirs.unet(sample, timestep, text.repeat_interleave(4, dim=0)).sample
    assert (mine - base).abs().max() > 1e-4
    assert (mine - reference).abs().max() <= 1e-4
    loaded = dict(ours.unet.named_parameters())
    for name, value in checkpoint.items():  # what loads is what trained
        assert torch.equal(loaded[name.replace(".default.", ".trained.")], value)


def test_lora_resume_repeats_the_straight_run_exactly(motion_model, clips, tmp_path):
    settings = dict(max_steps=4, checkpoint_every=2, ema=True, lr_scheduler="cosine", lr_warmup_steps=1)
    straight = train(_config(motion_model, clips, tmp_path / "straight", **settings))
    config = _config(motion_model, clips, tmp_path / "stopped", **settings)
    train(config, stop_after=2)
    assert not (tmp_path / "stopped" / "lora.safetensors").exists()
    resumed = train(config, resume=True)
    assert resumed["resumed_from"].endswith("step-00000002") and resumed["final_loss"] == straight["final_loss"]
    a, b = load_file(tmp_path / "straight" / "lora.safetensors"), load_file(tmp_path / "stopped" / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("overrides, message", [
    (dict(train_text_encoder=True), "trainable: lora .* train_text_encoder: false"),
    (dict(lora_targets="ff"), "lora_targets='ff'; choose one of temporal, spatial, both"),
    (dict(lora_rank=0), "lora_rank=0 must be at least 1"),
    (dict(lora_alpha="big"), "lora_alpha='big' is not a valid float"),
])
def test_lora_settings_are_checked(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        _config("model", "data", tmp_path, **overrides).check()
