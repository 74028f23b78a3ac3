"""The masked-frame interpolation model: widened conv_in that starts as the base model, and the masks it reads."""

import pytest
import torch
from conftest import randomize_temporal, tiny_unet2d, video_inputs

from vidiff.models.inflate import inflate_unet
from vidiff.models.interpolation import (
    extrapolation_mask,
    interpolation_mask,
    masked_condition,
    widen_conv_in,
)


@pytest.fixture
def base():
    video = inflate_unet(tiny_unet2d("sd15"), max_frames=16)
    randomize_temporal(video)  # a trained base, not an identity one
    return video.eval()


def test_widened_model_equals_the_base_model_at_init_whatever_the_condition(base, tmp_path):
    widened = widen_conv_in(base).eval()
    assert widened.unet.conv_in.in_channels == 9 and widened.config["spatial_config"]["in_channels"] == 9
    sample, timestep, text, _ = video_inputs(dict(base.unet.config), frames=8)
    known = torch.tensor([True, False, False, False, True, False, False, True])
    condition = masked_condition(torch.randn_like(sample), known)
    with torch.no_grad():
        expected = base(sample, timestep, text).sample
        got = widened(torch.cat([sample, condition], dim=1), timestep, text).sample
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # it saves and loads as any VideoUNet, and the new inputs do change the output once they have weights
    widened.save_pretrained(tmp_path / "unet")
    loaded = type(widened).from_pretrained(tmp_path / "unet").eval()
    with torch.no_grad():
        loaded.unet.conv_in.weight[:, 4:].normal_(0, 0.1)
        moved = loaded(torch.cat([sample, condition], dim=1), timestep, text).sample
    assert (moved - expected).abs().max() > 1e-3


def test_widening_twice_is_refused(base):
    with pytest.raises(ValueError, match="conv_in takes 9 channels"):
        widen_conv_in(widen_conv_in(base), latent_channels=4)


def test_masks_for_interpolation_extrapolation_and_image_animation():
    assert interpolation_mask(13, 4).tolist() == [i % 4 == 0 for i in range(13)]  # 0, 4, 8, 12
    assert interpolation_mask(5, 1).all()
    assert extrapolation_mask(16, 1).tolist() == [True] + [False] * 15  # animate one image
    assert extrapolation_mask(16, 4).sum() == 4 and extrapolation_mask(16, 4)[:4].all()
    for bad in (lambda: interpolation_mask(8, 0), lambda: extrapolation_mask(8, 0), lambda: extrapolation_mask(8, 8)):
        with pytest.raises(ValueError):
            bad()


def test_masked_condition_zeroes_unknown_frames_and_appends_the_mask():
    latents = torch.randn(2, 4, 5, 3, 3)
    known = torch.tensor([[True, False, False, False, True], [True, True, False, False, False]])
    condition = masked_condition(latents, known)
    assert condition.shape == (2, 5, 5, 3, 3)
    for b in range(2):
        for f in range(5):
            expected = latents[b, :, f] if known[b, f] else torch.zeros(4, 3, 3)
            assert torch.equal(condition[b, :4, f], expected)
            assert torch.equal(condition[b, 4, f], torch.full((3, 3), float(known[b, f])))
