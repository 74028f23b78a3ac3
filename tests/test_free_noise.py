"""Long clips (FreeNoise): windows over the temporal attention, noise rescheduling and split inference, each against
diffusers' FreeNoise on the same weights."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIGS, randomize_temporal, video_inputs
from diffusers import AnimateDiffPipeline, MotionAdapter, StableDiffusionPipeline
from diffusers.models.attention import FreeNoiseTransformerBlock
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

from vidiff.models.free_noise import FrameContext
from vidiff.models.inflate import inflate_unet
from vidiff.models.motion_adapter import inflate_with_motion_adapter
from vidiff.models.temporal import TemporalAttention
from vidiff.pipelines.text_to_video import TextToVideoPipeline


def motion_module_pair(channels=16, heads=4, max_frames=16, seed=0):
    """diffusers' AnimateDiffTransformer3D and vidiff's TemporalAttention with the same (random) weights."""
    torch.manual_seed(seed)
    theirs = AnimateDiffTransformer3D(num_attention_heads=heads, attention_head_dim=channels // heads,
                                      in_channels=channels, norm_num_groups=4, double_self_attention=True,
                                      positional_embeddings="sinusoidal", num_positional_embeddings=max_frames).eval()
    with torch.no_grad():
        theirs.proj_out.weight.normal_(0, 0.3)
    ours = TemporalAttention(channels, heads, 1, 4, max_frames).eval()
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def with_free_noise(module, length, stride, weighting):
    """diffusers' swap of a motion module's blocks for FreeNoiseTransformerBlocks (AnimateDiffFreeNoiseMixin)."""
    owner = type("Block", (), {"motion_modules": [module]})()
    pipe = type("Pipe", (), {"_free_noise_context_length": length, "_free_noise_context_stride": stride,
                             "_free_noise_weighting_scheme": weighting, "device": "cpu", "dtype": torch.float32})()
    AnimateDiffFreeNoiseMixin._enable_free_noise_in_block(pipe, owner)
    assert isinstance(module.transformer_blocks[0], FreeNoiseTransformerBlock)
    return module


@pytest.mark.parametrize("frames, weighting", [(24, "pyramid"), (40, "flat"), (27, "flat"), (30, "pyramid"),
                                               (20, "delayed_reverse_sawtooth")])
def test_windowed_motion_module_matches_diffusers_free_noise_block(frames, weighting):
    theirs, ours = motion_module_pair()
    with_free_noise(theirs, 8, 4, weighting)
    ours.frame_context = FrameContext(8, 4, weighting)
    x = torch.randn(2 * frames, 16, 3, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = theirs(x, num_frames=frames), ours(x, num_frames=frames)
    assert (expected - x).abs().max() > 0.05  # the module changes its input, so the comparison means something
    tiles = (frames - 8) % 4 == 0
    if tiles or weighting == "flat":
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    else:  # diffusers divides the frames only the extra last window covers by one weight for all of them
        tail = (frames - 8) % 4
        got, expected = got.unflatten(0, (2, frames)), expected.unflatten(0, (2, frames))
        torch.testing.assert_close(got[:, :-tail], expected[:, :-tail], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(got[:, -1], expected[:, -1], atol=1e-3)  # the last frame


def test_frames_only_one_window_covers_are_that_windows_output():
    context = FrameContext(8, 4, "pyramid")
    h = torch.randn(3, 29, 16)
    blended = context.blend(h, lambda x: x * 2 + x.mean(dim=1, keepdim=True))
    last = h[:, -8:]
    torch.testing.assert_close(blended[:, -1:], (last * 2 + last.mean(dim=1, keepdim=True))[:, -1:])
    torch.testing.assert_close(context.blend(h[:, :8], lambda x: x + 1), h[:, :8] + 1)  # one window: plain
    assert context.windows(29) == [(0, 8), (4, 12), (8, 16), (12, 20), (16, 24), (20, 28), (21, 29)]
    assert FrameContext(5, 2).weights() == [1, 2, 3, 2, 1] and FrameContext(4, 2).weights() == [1, 2, 2, 1]
    assert FrameContext(5, 2, "delayed_reverse_sawtooth").weights() == [0.01, 0.01, 3, 2, 1]


@pytest.mark.parametrize("noise_type", ["shuffle_context", "random"])
def test_rescheduled_noise_is_diffusers_noise(tiny_video_folder, noise_type):
    pipe = TextToVideoPipeline.from_pretrained(tiny_video_folder)
    pipe.enable_free_noise(context_length=8, context_stride=3, noise_type=noise_type)
    shape = (1, 4, 27, 4, 4)
    ours = pipe.prepare_latents(shape, torch.Generator().manual_seed(5), "cpu", None)
    reference = type("Pipe", (), {"_free_noise_context_length": 8, "_free_noise_context_stride": 3,
                                  "_free_noise_noise_type": noise_type, "vae_scale_factor": 1})()
    theirs = AnimateDiffFreeNoiseMixin._prepare_latents_free_noise(
        reference, 1, 4, 27, 4, 4, torch.float32, "cpu", torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    if noise_type == "shuffle_context":  # every frame's noise is a frame of the first window's
        frames = ours[0].transpose(0, 1).flatten(1)  # (f, c h w)
        assert all(any(torch.equal(frame, first) for first in frames[:8]) for frame in frames[8:])
    pipe.enable_free_noise(context_length=8, context_stride=3, noise_type="repeat_context")
    repeated = pipe.prepare_latents(shape, torch.Generator().manual_seed(5), "cpu", None)
    torch.testing.assert_close(repeated[:, :, 8:16], repeated[:, :, :8], atol=0, rtol=0)


def test_pipeline_with_free_noise_matches_animatediff_pipeline_at_64_frames(tiny_sd_folder, tmp_path):
    sd = StableDiffusionPipeline.from_pretrained(tiny_sd_folder)
    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=tuple(sd.unet.config.block_out_channels),
                            motion_layers_per_block=sd.unet.config.layers_per_block, motion_num_attention_heads=4,
                            motion_norm_num_groups=8, motion_max_seq_length=16).eval()
    with torch.no_grad():  # motion modules that move things, so that the windows matter
        for name, param in adapter.named_parameters():
            if "proj_out" in name:
                param.normal_(0, 0.3)
    adapter.save_pretrained(tmp_path / "adapter")
    reference = AnimateDiffPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                                    motion_adapter=adapter, scheduler=sd.scheduler)
    unet = inflate_with_motion_adapter(sd.unet, tmp_path / "adapter", temporal_conv=False)
    pipe = TextToVideoPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet,
                               scheduler=sd.scheduler)
    options = dict(context_length=16, context_stride=4, weighting_scheme="pyramid", noise_type="shuffle_context")
    for p in (pipe, reference):
        p.set_progress_bar_config(disable=True)
        p.enable_free_noise(**options)
    latents = torch.randn(1, 4, 64, 8, 8, generator=torch.Generator().manual_seed(1))
    kwargs = dict(num_frames=64, num_inference_steps=2, guidance_scale=5.0, negative_prompt="static")
    ours = pipe("a red circle moving right", latents=latents, **kwargs).frames[0]
    theirs = reference("a red circle moving right", latents=latents.clone(), output_type="pt", **kwargs).frames[0]
    theirs = (theirs.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (f, h, w, c) like ours
    assert ours.shape == theirs.shape == (64, 64, 64, 3) and theirs.std() > 10
    assert np.abs(ours.astype(int) - theirs).max() <= 2


def test_split_inference_changes_nothing_and_per_frame_text_runs(sd_unet2d):
    video = inflate_unet(sd_unet2d, max_frames=8).eval()
    randomize_temporal(video)
    sample, timestep, text, _ = video_inputs(TINY_CONFIGS["sd15"], frames=12, size=8)
    per_frame = text.repeat_interleave(12, dim=0) + torch.randn(24, 1, text.shape[-1]) * 0.1
    video.set_frame_context(FrameContext(8, 2))
    with torch.no_grad():
        whole = [video(sample, timestep, t).sample for t in (text, per_frame)]
        video.set_split_inference(spatial_split_size=7, temporal_split_size=5)
        split = [video(sample, timestep, t).sample for t in (text, per_frame)]
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (whole[0] - whole[1]).abs().max() > 1e-3  # per-frame texts are read per frame


def test_a_clip_within_one_window_is_the_plain_clip(tiny_video_folder):
    pipe = TextToVideoPipeline.from_pretrained(tiny_video_folder)
    randomize_temporal(pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_frames=8, num_inference_steps=2, height=32, width=32, output_type="latent")
    plain = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).frames
    pipe.enable_free_noise(context_length=8, context_stride=2)
    assert pipe.free_noise_enabled
    windowed = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).frames
    torch.testing.assert_close(windowed, plain, atol=0, rtol=0)
    long = pipe("a red circle", generator=torch.Generator().manual_seed(0), **{**kwargs, "num_frames": 20}).frames
    assert long.shape[2] == 20 and torch.isfinite(long).all()  # past max_frames (16), temporal convs included
    pipe.disable_free_noise()
    with pytest.raises(ValueError, match="max_frames"):
        pipe("a red circle", **{**kwargs, "num_frames": 20})


@pytest.mark.parametrize("options, needle", [
    (dict(context_length=8, context_stride=8), "must be smaller than context_length"),
    (dict(context_length=32, context_stride=4), "more than this model's max_frames 16"),
    (dict(context_length=8, context_stride=2, weighting_scheme="cone"), "unknown weighting_scheme"),
    (dict(context_length=8, context_stride=2, noise_type="fresh"), "unknown noise_type"),
])
def test_bad_window_options_are_refused(tiny_video_folder, options, needle):
    pipe = TextToVideoPipeline.from_pretrained(tiny_video_folder)
    with pytest.raises(ValueError, match=needle):
        pipe.enable_free_noise(**options)


def test_generate_switches_windows_on_above_max_frames(tiny_video_folder, tmp_path, capsys):
    from vidiff.cli import main
    from vidiff.io.video import read_video

    out = tmp_path / "long.mp4"
    assert main(["generate", "a red circle", "--model", str(tiny_video_folder), "-o", str(out), "--num-frames", "20",
                 "--steps", "2", "--seed", "0", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "20 frames is more than the model's 16: sampling in sliding windows of 16 frames every 4" in err
    assert read_video(out)[0].shape[0] == 20
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["base"]["context"] == {"length": 16, "stride": 4, "weighting": "pyramid"}


@pytest.mark.parametrize("extra, needle", [
    (["--context-length", "8", "--context-stride", "8"], "--context-stride 8 must be smaller than --context-length 8"),
    (["--context-length", "17"], "--context-length 17 is more than the model's max_frames 16"),
])
def test_generate_bad_window_options_exit_2(tiny_video_folder, tmp_path, capsys, extra, needle):
    from vidiff.cli import main

    assert main(["generate", "x", "--model", str(tiny_video_folder), "-o", str(tmp_path / "o.mp4"),
                 "--num-frames", "40", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
