"""Frame interpolation: output length, windows that share keyframes, known frames kept exactly, errors."""

import numpy as np
import pytest
import torch

from vidiff.data.shapes import render_clip
from vidiff.models.interpolation import widen_conv_in
from vidiff.pipelines.interpolate import interpolate, window_spans
from vidiff.pipelines.text_to_video import TextToVideoPipeline


@pytest.fixture(scope="module")
def interp_pipe(tiny_video_folder):
    pipe = TextToVideoPipeline.from_pretrained(tiny_video_folder)
    pipe.unet = widen_conv_in(pipe.unet)
    with torch.no_grad():  # as if trained: the masked inputs matter
        pipe.unet.unet.conv_in.weight[:, 4:].normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_window_spans_cover_every_keyframe_and_share_boundaries():
    for num_keyframes, factor, max_frames in [(2, 4, 16), (7, 4, 16), (7, 4, 8), (30, 2, 16), (5, 15, 16)]:
        spans = window_spans(num_keyframes, factor, max_frames)
        assert spans[0][0] == 0 and spans[-1][1] == num_keyframes - 1
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # neighbours share a keyframe
        assert all((last - first) * factor + 1 <= max_frames and last > first for first, last in spans)
    with pytest.raises(ValueError, match="at most 15"):
        window_spans(3, 16, 16)


def test_interpolate_returns_the_promised_count_and_keeps_known_frames_exactly(interp_pipe):
    frames = render_clip("red", "circle", "right", num_frames=3, size=64, seed=0)
    out = interpolate(interp_pipe, frames, factor=4, num_inference_steps=2)
    assert out.shape == (9, 64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[::4], frames)  # bit-exact in pixel space
    assert not np.array_equal(out[1], out[0])  # the in-between frames are generated, not copies
    decoded = interpolate(interp_pipe, frames, factor=4, num_inference_steps=2, keep_known=False)
    assert np.array_equal(decoded[1:4], out[1:4]) and not np.array_equal(decoded[::4], frames)  # VAE round trip


def test_long_input_runs_in_windows_with_the_same_result_at_each_shared_keyframe(interp_pipe):
    frames = render_clip("blue", "square", "up", num_frames=7, size=64, seed=1)
    out = interpolate(interp_pipe, frames, factor=3, num_inference_steps=2, max_window=7)  # 2 gaps per window
    assert out.shape == (19, 64, 64, 3) and np.array_equal(out[::3], frames)
    whole = interpolate(interp_pipe, frames[:3], factor=3, num_inference_steps=2, max_window=7)
    assert np.array_equal(out[:7], whole)  # the first window is what a 3-keyframe input gives


@pytest.mark.parametrize("frames, factor, match", [
    (np.zeros((1, 64, 64, 3), np.uint8), 2, "at least 2 frames"),
    (np.zeros((3, 64, 64, 3), np.uint8), 1, "at least 2"),
    (np.zeros((3, 60, 64, 3), np.uint8), 2, "multiple of 8"),
    (np.zeros((3, 64, 64, 3), np.float32), 2, "uint8"),
])
def test_bad_inputs_are_refused_with_the_value_named(interp_pipe, frames, factor, match):
    with pytest.raises(ValueError, match=match):
        interpolate(interp_pipe, frames, factor=factor)


def test_text_to_video_sampling_refuses_an_interpolation_model_without_its_condition(interp_pipe):
    with pytest.raises(ValueError, match="condition"):
        interp_pipe("a red circle", num_frames=2, num_inference_steps=1)


def test_replacement_returns_the_known_latents_clean_and_steers_the_unknown_ones(interp_pipe):
    """With trained (non-identity) temporal layers the replaced known frames reach the unknown ones."""
    import copy

    from conftest import randomize_temporal
    from vidiff.models.interpolation import interpolation_mask, masked_condition

    interp_pipe = copy.deepcopy(interp_pipe)
    randomize_temporal(interp_pipe.unet)

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 5, 8, 8, generator=generator)
    known = interpolation_mask(5, 2)
    condition = masked_condition(latents, known)

    def sample(replace):
        return interp_pipe("", num_frames=5, height=64, width=64, num_inference_steps=3, guidance_scale=1.0,
                           generator=torch.Generator().manual_seed(1), output_type="latent", condition=condition,
                           replace_known=replace, show_progress=False).frames

    replaced, plain = sample(True), sample(False)
    torch.testing.assert_close(replaced[:, :, known], latents[:, :, known])  # the known frames, exactly
    assert not torch.allclose(plain[:, :, known], latents[:, :, known], atol=0.1)
    assert not torch.allclose(replaced[:, :, ~known], plain[:, :, ~known])  # the rest saw the known frames


def test_blend_start_mixes_neighbouring_keyframes_and_strength_is_checked(interp_pipe):
    from vidiff.pipelines.interpolate import blend_latents

    keys = torch.stack([torch.zeros(4, 2, 2), torch.ones(4, 2, 2) * 4], dim=1)  # (c, 2, h, w)
    assert blend_latents(keys, 4)[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert blend_latents(keys, 4, "nearest")[0, 0, :, 0, 0].tolist() == [0, 0, 0, 4, 4]
    frames = render_clip("red", "circle", "right", num_frames=3, size=64, seed=0)
    out = interpolate(interp_pipe, frames, factor=2, num_inference_steps=4, init="blend", strength=0.5)
    assert out.shape == (5, 64, 64, 3) and np.array_equal(out[::2], frames)
    for bad in (dict(init="blend", strength=0.0), dict(init="copy")):
        with pytest.raises(ValueError, match="strength"):
            interpolate(interp_pipe, frames, factor=2, num_inference_steps=4, **bad)
