"""Video to video: `pipe(prompt, video=..., strength=...)` against diffusers' AnimateDiffVideoToVideoPipeline, long
inputs in FreeNoise windows, and `vidiff restyle`."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffVideoToVideoPipeline, MotionAdapter, StableDiffusionPipeline
from PIL import Image

from vidiff.cli import main
from vidiff.data.shapes import render_clip
from vidiff.io.video import read_video, write_video
from vidiff.models.motion_adapter import inflate_with_motion_adapter
from vidiff.pipelines.restyle import first_step
from vidiff.pipelines.text_to_video import TextToVideoPipeline


@pytest.fixture(scope="module")
def source():
    return render_clip("red", "circle", "right", num_frames=6, size=64, seed=2)


@pytest.mark.parametrize("strength", [0.6])
def test_restyle_matches_animatediff_video_to_video(tiny_sd_folder, tmp_path, source, strength):
    sd = StableDiffusionPipeline.from_pretrained(tiny_sd_folder)
    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=tuple(sd.unet.config.block_out_channels),
                            motion_layers_per_block=sd.unet.config.layers_per_block, motion_num_attention_heads=4,
                            motion_norm_num_groups=8, motion_max_seq_length=16).eval()
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "proj_out" in name:
                param.normal_(0, 0.3)
    adapter.save_pretrained(tmp_path / "adapter")
    reference = AnimateDiffVideoToVideoPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer,
                                                unet=sd.unet, motion_adapter=adapter, scheduler=sd.scheduler)
    unet = inflate_with_motion_adapter(sd.unet, tmp_path / "adapter", temporal_conv=False)
    pipe = TextToVideoPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet,
                               scheduler=sd.scheduler)
    for p in (pipe, reference):
        p.set_progress_bar_config(disable=True)
    kwargs = dict(num_inference_steps=5, guidance_scale=4.0, negative_prompt="static", strength=strength,
                  decode_chunk_size=4)
    ours = pipe("a blue circle moving right", video=source, generator=torch.Generator().manual_seed(7),
                **kwargs).frames[0]
    theirs = reference(video=[Image.fromarray(frame) for frame in source], prompt="a blue circle moving right",
                       generator=torch.Generator().manual_seed(7), output_type="pt", **kwargs).frames[0]
    theirs = (theirs.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert ours.shape == theirs.shape == (6, 64, 64, 3) and theirs.std() > 10
    assert np.abs(ours.astype(int) - theirs).max() <= 2
    assert first_step(5, strength) == (2 if strength == 0.6 else 0)


def test_long_video_restyles_in_windows_and_inputs_are_checked(tiny_video_folder):
    pipe = TextToVideoPipeline.from_pretrained(tiny_video_folder)
    pipe.set_progress_bar_config(disable=True)
    video = render_clip("red", "circle", "right", num_frames=20, size=64, seed=1)
    kwargs = dict(num_inference_steps=2, strength=0.5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="max_frames"):
        pipe("a blue circle", video=video, **kwargs)
    pipe.enable_free_noise(context_length=8, context_stride=4)
    out = pipe("a blue circle", video=list(video), **kwargs).frames  # a list of frames works too
    assert out.shape == (1, 20, 64, 64, 3)
    for bad, needle in ((dict(strength=0.0), r"strength 0.0 must be within \(0, 1\]"),
                        (dict(strength=1.5), "must be within"),
                        (dict(video=video[:, :32]), "the video is 64x32 but the model samples 64x64"),
                        (dict(num_frames=5), "num_frames=5 but the video has 20 frames"),
                        (dict(latents=torch.zeros(1, 4, 20, 8, 8)), "not both")):
        with pytest.raises(ValueError, match=needle):
            pipe("x", **{"video": video, **kwargs, **bad})


def test_restyle_command(tiny_video_folder, tmp_path, capsys, source):
    clip = tmp_path / "red.mkv"  # lossless
    write_video(source, clip, fps=5)
    out = tmp_path / "blue.mp4"
    assert main(["restyle", str(clip), "a blue circle moving right", "--strength", "0.5", "--model",
                 str(tiny_video_folder), "-o", str(out), "--steps", "2", "--seed", "3", "--no-progress"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (6, 64, 64, 3) and fps == pytest.approx(5, abs=0.1)  # the input's rate by default
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["strength"] == 0.5 and sidecar["input"] == str(clip) and sidecar["base"]["from"] == "video"


@pytest.mark.parametrize("extra, needle", [
    (["--strength", "0"], r"--strength 0.0 must be within \(0, 1\]"),
    (["--strength", "1.2"], r"--strength 1.2 must be within \(0, 1\]"),
    (["--height", "32", "--width", "32"], "the video is 64x64 but the model samples 32x32 \\(--height/--width\\)"),
])
def test_restyle_bad_input_is_one_line_and_exit_2(tiny_video_folder, tmp_path, capsys, source, extra, needle):
    clip = tmp_path / "red.gif"
    write_video(source, clip, fps=5)
    assert main(["restyle", str(clip), "x", "--model", str(tiny_video_folder), "-o", str(tmp_path / "o.mp4"),
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(needle, err), err


def test_restyle_unreadable_video_is_exit_2(tiny_video_folder, tmp_path, capsys):
    (tmp_path / "junk.mp4").write_text("not a video")
    assert main(["restyle", str(tmp_path / "junk.mp4"), "x", "--model", str(tiny_video_folder), "-o",
                 str(tmp_path / "o.mp4")]) == 2
    assert "cannot read video" in capsys.readouterr().err
