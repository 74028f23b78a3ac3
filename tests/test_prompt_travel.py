"""Prompt travel: a prompt per keyframe, text embeddings interpolated between them as diffusers' FreeNoise does."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline, MotionAdapter, StableDiffusionPipeline

from vidiff.cli import main
from vidiff.io.video import read_video
from vidiff.models.motion_adapter import inflate_with_motion_adapter
from vidiff.pipelines.prompt_travel import check_prompt_travel, frame_embeddings, prompt_at
from vidiff.pipelines.text_to_video import TextToVideoPipeline

TRAVEL = {0: "a red circle moving right", 6: "a blue circle moving right", 9: "a blue square moving up"}


@pytest.fixture(scope="module")
def pair(tiny_sd_folder, tmp_path_factory):
    """vidiff's pipeline and diffusers' AnimateDiffPipeline on the same tiny SD + MotionAdapter, FreeNoise on."""
    sd = StableDiffusionPipeline.from_pretrained(tiny_sd_folder)
    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=tuple(sd.unet.config.block_out_channels),
                            motion_layers_per_block=sd.unet.config.layers_per_block, motion_num_attention_heads=4,
                            motion_norm_num_groups=8, motion_max_seq_length=16).eval()
    folder = tmp_path_factory.mktemp("adapter")
    adapter.save_pretrained(folder)
    reference = AnimateDiffPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                                    motion_adapter=adapter, scheduler=sd.scheduler)
    unet = inflate_with_motion_adapter(sd.unet, folder, temporal_conv=False)
    pipe = TextToVideoPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet,
                               scheduler=sd.scheduler)
    for p in (pipe, reference):
        p.set_progress_bar_config(disable=True)
        p.enable_free_noise(context_length=8, context_stride=4)
    return pipe, reference


def test_frame_embeddings_are_diffusers_free_noise_embeddings(pair):
    pipe, reference = pair
    ours = pipe.encode_prompts([TRAVEL], {0: "static", 5: "blurry"}, "cpu", 1, True, num_frames=12)
    theirs, _ = reference._encode_prompt_free_noise(TRAVEL, 12, "cpu", 1, True,
                                                    negative_prompt={0: "static", 5: "blurry"})
    assert ours.shape == theirs.shape == (24, 77, 32)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    middle = ours[12 + 3]  # frame 3: half way from the first prompt to the second
    torch.testing.assert_close(middle, (ours[12] + ours[12 + 6]) / 2, atol=1e-6, rtol=1e-5)


def test_travelling_clip_matches_animatediff_pipeline(pair):
    pipe, reference = pair
    latents = torch.randn(1, 4, 12, 8, 8, generator=torch.Generator().manual_seed(3))
    kwargs = dict(num_frames=12, num_inference_steps=2, guidance_scale=4.0)
    ours = pipe(TRAVEL, latents=latents, **kwargs).frames[0]
    theirs = reference(TRAVEL, latents=latents.clone(), output_type="pt", **kwargs).frames[0]
    theirs = (theirs.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs).max() <= 2
    one_prompt = pipe({0: TRAVEL[0]}, latents=latents, **kwargs).frames[0]  # one keyframe: the plain prompt
    np.testing.assert_allclose(one_prompt, pipe(TRAVEL[0], latents=latents, **kwargs).frames[0], atol=1)
    assert np.abs(one_prompt.astype(int) - ours).max() > 2  # the later prompts change the later frames


def test_keyframes_are_checked_and_looked_up():
    assert list(check_prompt_travel({9: "b", 0: "a"}, 10)) == [0, 9]
    for bad, needle in (({10: "a"}, r"outside \[0, 10\)"), ({-1: "a"}, "outside"), ({"3": "a"}, "integer"),
                        ({1.5: "a"}, "integer"), ({True: "a"}, "integer"), ({0: 3}, "must be a string"),
                        ({}, "empty")):
        with pytest.raises(ValueError, match=needle):
            check_prompt_travel(bad, 10)
    assert [prompt_at({2: "a", 5: "b"}, f) for f in (0, 2, 4, 5, 9)] == ["a", "a", "a", "b", "b"]
    embeds = torch.arange(3.0).view(3, 1, 1)
    travel = frame_embeddings([2, 4, 8], embeds, 10).flatten().tolist()
    assert travel == [0, 0, 0, 0.5, 1, 1.25, 1.5, 1.75, 2, 2]  # held before the first and after the last keyframe


def test_prompt_travel_command(tiny_video_folder, tmp_path, capsys):
    travel = tmp_path / "travel.json"
    travel.write_text(json.dumps({"0": "a red circle moving right", "3": "a blue circle moving right"}))
    out = tmp_path / "clip.mp4"
    assert main(["generate", "--prompt-travel", str(travel), "--model", str(tiny_video_folder), "-o", str(out),
                 "--num-frames", "6", "--steps", "2", "--seed", "1", "--no-progress"]) == 0
    assert read_video(out)[0].shape == (6, 64, 64, 3)
    assert json.loads(Path(f"{out}.json").read_text())["prompt"] == {"0": "a red circle moving right",
                                                                     "3": "a blue circle moving right"}


@pytest.mark.parametrize("content, needle", [
    ({"0": "a", "6": "b"}, r"key 6 is outside \[0, 6\)"),
    ({"zero": "a"}, "not an integer frame index"),
    ({"-1": "a"}, "not an integer frame index"),
    (["a", "b"], "must hold a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_bad_prompt_travel_file_is_one_line_and_exit_2(tiny_video_folder, tmp_path, capsys, content, needle):
    travel = tmp_path / "travel.json"
    travel.write_text(content if isinstance(content, str) else json.dumps(content))
    assert main(["generate", "--prompt-travel", str(travel), "--model", str(tiny_video_folder), "-o",
                 str(tmp_path / "o.mp4"), "--num-frames", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(needle, err), err
