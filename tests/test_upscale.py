"""Super-resolution stage: x4-upscaler-layout U-Net inflated, shared noise, windows, sizes, parity with diffusers."""

import numpy as np
import pytest
import torch
from conftest import frame_by_frame, randomize_temporal
from diffusers import StableDiffusionUpscalePipeline

from vidiff.data.degrade import degrade
from vidiff.models.inflate_folder import inflate_model_folder
from vidiff.pipelines.upscale import UpscalePipeline, fold_lowres, lowres_fold, upscale, upscale_passes, window_starts
from vidiff.testing.tiny import make_tiny_upscaler


@pytest.fixture(scope="module")
def x4_folder(tmp_path_factory):
    """A tiny StableDiffusionUpscalePipeline folder (4x VAE, 7-channel U-Net) and its inflated video model."""
    root = tmp_path_factory.mktemp("x4")
    image = make_tiny_upscaler(root / "x4")
    return image, inflate_model_folder(image, root / "x4-video", max_frames=8)


@pytest.fixture(scope="module")
def x4_pipe(x4_folder):
    pipe = UpscalePipeline.from_pretrained(x4_folder[1])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def lowres_clip(frames=3, size=8, seed=0, same=False):
    rng = np.random.default_rng(seed)
    clip = rng.integers(0, 256, (1 if same else frames, size, size, 3), dtype=np.uint8)
    return np.repeat(clip, frames, axis=0) if same else clip


def test_inflated_upscaler_folder_keeps_the_low_res_scheduler(x4_folder, x4_pipe):
    import json

    index = json.loads((x4_folder[1] / "model_index.json").read_text())
    assert index["_class_name"] == "UpscalePipeline" and index["max_noise_level"] == 350
    assert (x4_folder[1] / "low_res_scheduler").is_dir()
    assert x4_pipe.scale == 4 and x4_pipe.fold == 1


def test_identity_at_init_the_2d_forward_is_unchanged(x4_folder, x4_pipe):
    from diffusers import UNet2DConditionModel

    unet2d = UNet2DConditionModel.from_pretrained(x4_folder[0] / "unet").eval()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 7, 4, 8, 8, generator=generator)
    text = torch.randn(2, 77, unet2d.config.cross_attention_dim, generator=generator)
    timestep, labels = torch.tensor([10, 600]), torch.tensor([20, 300])
    with torch.no_grad():
        video = x4_pipe.unet(sample, timestep, text, class_labels=labels).sample
        reference = frame_by_frame(unet2d, sample, timestep, text, labels)
    torch.testing.assert_close(video, reference, atol=1e-5, rtol=1e-4)


def test_one_frame_matches_diffusers_stable_diffusion_upscale_pipeline(x4_folder, x4_pipe):
    """The same folder through diffusers' StableDiffusionUpscalePipeline: same noise draws, same frame."""
    reference = StableDiffusionUpscalePipeline.from_pretrained(x4_folder[0])
    reference.set_progress_bar_config(disable=True)
    frame = lowres_clip(1, 8)
    expected = reference(prompt="", image=torch.from_numpy(frame).permute(0, 3, 1, 2).float() / 255,
                         num_inference_steps=3, guidance_scale=1.0, noise_level=20,
                         generator=torch.Generator().manual_seed(3), output_type="np").images[0]
    ours = x4_pipe(frame, num_inference_steps=3, noise_level=20, generator=torch.Generator().manual_seed(3),
                   output_type="pt").frames[0, :, 0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, expected, atol=2e-4)


def test_output_size_and_multi_pass_scale(x4_pipe):
    clip = lowres_clip(2, 8)
    assert x4_pipe(clip, num_inference_steps=1).frames.shape == (1, 2, 32, 32, 3)
    assert upscale(x4_pipe, clip[:, :4, :4], 16, num_inference_steps=1).shape == (2, 64, 64, 3)
    assert upscale_passes(4, 4) == 1 and upscale_passes(16, 4) == 2 and upscale_passes(4, 2) == 2
    for bad in (3, 8, 1, 2.0):
        with pytest.raises(ValueError, match="not reachable"):
            upscale_passes(bad, 4)


def test_shared_noise_gives_every_frame_the_same_start(x4_pipe):
    """Identical low-res frames and per-frame-independent layers: shared noise makes identical frames; fresh noise
    per frame does not."""
    clip = lowres_clip(3, 8, same=True)
    shared = x4_pipe(clip, num_inference_steps=2, noise_level=0, generator=torch.Generator().manual_seed(0),
                     output_type="latent").frames
    # the low-res augmentation noise is drawn per frame too; level 0 keeps it tiny (beta_0 = 1e-4)
    assert (shared[:, :, 1:] - shared[:, :, :1]).abs().max() < 0.05
    fresh = x4_pipe(clip, num_inference_steps=2, noise_level=0, generator=torch.Generator().manual_seed(0),
                    shared_noise=False, output_type="latent").frames
    assert (fresh[:, :, 1:] - fresh[:, :, :1]).abs().max() > 0.5


def test_windows_cover_every_frame_and_overlap():
    for frames, window, overlap in ((20, 8, 2), (8, 8, 2), (9, 8, 4), (61, 16, 4)):
        starts = window_starts(frames, window, overlap)
        covered = set().union(*(range(s, min(s + window, frames)) for s in starts))
        assert covered == set(range(frames)) and starts[-1] + window == max(frames, window)
        assert all(b - a <= window - overlap for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="overlap"):
        window_starts(20, 8, 8)


def test_windowed_upscale_equals_one_window_when_frames_are_independent(x4_folder, x4_pipe):
    """Identity temporal layers: every frame is denoised on its own, so averaging overlapping windows changes
    nothing; with trained (non-identity) temporal layers the windows differ from one pass but cover every frame."""
    clip = lowres_clip(6, 8)

    def run(pipe, **kwargs):
        return pipe(clip, num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="latent",
                    **kwargs).frames

    whole = run(x4_pipe)
    torch.testing.assert_close(run(x4_pipe, window=4, overlap=2), whole, atol=1e-4, rtol=1e-4)
    trained = UpscalePipeline.from_pretrained(x4_folder[1])
    trained.set_progress_bar_config(disable=True)
    randomize_temporal(trained.unet)
    mixed = run(trained, window=4, overlap=2)
    assert mixed.shape == whole.shape and torch.isfinite(mixed).all()
    assert not torch.allclose(mixed, run(trained), atol=1e-3)


def test_fold_and_degrade():
    assert lowres_fold(7, 4) == 1 and lowres_fold(52, 4) == 4
    with pytest.raises(ValueError, match="not an upscaler"):
        lowres_fold(9, 4)
    x = torch.arange(2 * 3 * 2 * 8 * 8, dtype=torch.float32).reshape(2, 3, 2, 8, 8)
    folded = fold_lowres(x, 4)
    assert folded.shape == (2, 48, 2, 2, 2)
    torch.testing.assert_close(
        torch.nn.functional.pixel_shuffle(folded[:, :, 1], 4), x[:, :, 1])  # nothing lost
    down = degrade(x, 2)
    reference = x.double().reshape(2, 3, 2, 4, 2, 4, 2).mean(dim=(4, 6)).float()  # 2x2 box means
    torch.testing.assert_close(down, reference)
    blurred = degrade(x, 1, blur_sigma=1.0)
    assert blurred.shape == x.shape and not torch.equal(blurred, x)
    torch.testing.assert_close(blurred.mean(), x.mean(), atol=2.0, rtol=0)


def test_bad_inputs_are_refused(x4_pipe):
    with pytest.raises(ValueError, match="uint8"):
        x4_pipe(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="noise_level"):
        x4_pipe(lowres_clip(1, 8), noise_level=400)
