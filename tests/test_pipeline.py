"""Text-to-video sampling: frame-by-frame parity with diffusers' StableDiffusionPipeline, seeds, input checks."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from einops import rearrange

from vidiff.pipelines.text_to_video import TextToVideoPipeline, check_tokenizer


@pytest.fixture(scope="module")
def pipe(tiny_video_folder):
    pipe = TextToVideoPipeline.from_pretrained(tiny_video_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd_folder):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++", "euler"])
def test_identity_video_pipeline_reproduces_the_image_pipeline_frame_by_frame(pipe, sd_pipe, scheduler):
    pipe.set_scheduler(scheduler)
    sd_pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    frames, prompt, negative = 4, "a red circle moving right", "blurry"
    latents = torch.randn(1, 4, frames, 8, 8, generator=torch.Generator().manual_seed(3))
    video = pipe(prompt, negative_prompt=negative, num_frames=frames, num_inference_steps=4, guidance_scale=6.0,
                 latents=latents, output_type="pt").frames
    images = sd_pipe(prompt, negative_prompt=negative, num_images_per_prompt=frames, num_inference_steps=4,
                     guidance_scale=6.0, latents=rearrange(latents[0], "c f h w -> f c h w"), output_type="np").images
    reference = rearrange(torch.from_numpy(images), "f h w c -> 1 c f h w")
    assert video.shape == reference.shape == (1, 3, frames, 64, 64)
    assert reference.std() > 0.05
    torch.testing.assert_close(video, reference, atol=1e-4, rtol=0)
    pipe.set_scheduler("ddim")


def test_same_seed_same_frames_and_uint8_layout(pipe):
    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return pipe(["a red circle", "a blue square"], num_frames=3, num_inference_steps=2, generator=generator,
                    num_videos_per_prompt=2).frames

    first, again, other = run(7), run(7), run(8)
    assert first.dtype == np.uint8 and first.shape == (4, 3, 64, 64, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_latent_output_and_chunked_decode_agree(pipe):
    kwargs = dict(num_frames=5, num_inference_steps=2, guidance_scale=1.0)
    latents = pipe("x", generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs).frames
    assert latents.shape == (1, 4, 5, 8, 8)
    whole = pipe.decode_latents(latents, decode_chunk_size=5)
    torch.testing.assert_close(pipe.decode_latents(latents, decode_chunk_size=2), whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(height=60), "height=60"),
        (dict(width=0), "width=0"),
        (dict(num_frames=17), "num_frames=17"),
        (dict(num_inference_steps=0), "num_inference_steps=0"),
        (dict(output_type="gif"), "output_type 'gif'"),
    ],
)
def test_bad_arguments_name_the_value(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe("a red circle", **kwargs)


def test_unknown_scheduler_is_named(pipe):
    with pytest.raises(ValueError, match="'plms'.*ddim"):
        pipe.set_scheduler("plms")


def test_two_token_tokenizer_is_refused(pipe):
    class Broken:
        def __len__(self):
            return 2

    with pytest.raises(ValueError, match="only 2 tokens"):
        check_tokenizer(Broken(), pipe.text_encoder)


@pytest.fixture()
def mixing_pipe(tiny_video_folder):
    """A fresh pipeline whose temporal layers really mix frames (random weights instead of the identity)."""
    from conftest import randomize_temporal

    pipe = TextToVideoPipeline.from_pretrained(tiny_video_folder)
    randomize_temporal(pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sample(pipe, size: int = 64):
    return pipe("a red circle moving right", num_frames=4, num_inference_steps=3, guidance_scale=6.0, height=size,
                width=size, generator=torch.Generator().manual_seed(5), output_type="pt").frames


def test_conv_layout_is_chosen_per_device_and_does_not_change_the_result(mixing_pipe):
    mixing_pipe.conv_layout = "contiguous"
    contiguous = _sample(mixing_pipe)
    assert not mixing_pipe.unet.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    mixing_pipe.conv_layout = "auto"  # on the CPU: channels-last, oneDNN's faster layout
    auto = _sample(mixing_pipe)
    assert mixing_pipe.unet.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(auto, contiguous, atol=1e-4, rtol=0)
    assert (auto[:, :, 1:] - auto[:, :, :-1]).abs().max() > 1e-3  # frames differ: a real video, not one image


def test_compiled_unet_samples_the_same_clip_as_eager(mixing_pipe):
    # 128 px: at 64 px the tiny U-Net's lowest level is 1x1, where aot_eager's GroupNorm on the CPU fails a
    # layout check (a torch limitation, seen with every temporal conv form)
    eager = _sample(mixing_pipe, 128)
    # aot_eager traces the graph as inductor does, without a C++ build; inductor's own output is checked against
    # eager in the GPU tests and by scripts/bench.py --compile before it is timed
    mixing_pipe.compile_unet(backend="aot_eager")
    assert type(mixing_pipe.unet).__name__ == "OptimizedModule"
    torch.testing.assert_close(_sample(mixing_pipe, 128), eager, atol=1e-5, rtol=0)


def test_set_conv_layout_picks_channels_last_on_the_cpu_only_and_reaches_through_compile():
    from conftest import tiny_unet2d

    from vidiff import inflate_unet
    from vidiff.pipelines.text_to_video import set_conv_layout

    video = inflate_unet(tiny_unet2d("sd15"))
    weight = video.unet.conv_in.weight
    set_conv_layout(video, torch.device("cpu"))
    assert video.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not video.unet.conv_in.weight.is_contiguous()
    set_conv_layout(torch.compile(video), torch.device("cuda"))  # only the device's type is read: no GPU needed
    assert video.unet.conv_in.weight.is_contiguous()
    set_conv_layout(video, torch.device("cuda"), layout="channels_last")
    assert video.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert video.unet.conv_in.weight is weight  # converted in place: optimizers and hooks keep their parameters
