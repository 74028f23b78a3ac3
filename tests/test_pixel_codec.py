"""The lossless pixel codec: exact round trip, the VAE API the pipelines and trainer use, and an upscale stage that
carries its own codec and x0-predicting scheduler inside a cascade."""

import json
import shutil

import pytest
import torch
from diffusers import DDIMScheduler
from einops import rearrange

from vidiff.models.inflate_folder import inflate_model_folder
from vidiff.models.pixel_codec import PixelShuffleCodec
from vidiff.pipelines.cascade import load_stage, load_upscaler, read_cascade, upscale_settings, upscaler_geometry
from vidiff.pipelines.text_to_video import TextToVideoPipeline
from vidiff.pipelines.upscale import UpscalePipeline


def test_encode_is_space_to_depth_and_decode_inverts_it_exactly():
    codec = PixelShuffleCodec(factor=4)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    z = codec.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(0))
    # reference: each 4x4 block of each colour channel becomes 16 channels, in pixel_unshuffle's (c, p, q) order
    assert torch.equal(z, rearrange(x, "n c (h p) (w q) -> n (c p q) h w", p=4, q=4))
    assert torch.equal(codec.encode(x).latent_dist.mode(), z) and not codec.encode(x).latent_dist.std.any()
    assert torch.equal(codec.decode(z).sample, x)  # bit for bit
    assert codec.config.latent_channels == 48 and 2 ** (len(codec.config.block_out_channels) - 1) == 4


def test_save_and_load_keep_the_factor_and_cast_the_dtype(tmp_path):
    PixelShuffleCodec(factor=8).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "PixelShuffleCodec" and config["latent_channels"] == 192
    loaded = PixelShuffleCodec.from_pretrained(tmp_path, torch_dtype=torch.float16)
    assert loaded.config.factor == 8 and loaded.dtype == torch.float16
    assert loaded.encode(torch.zeros(1, 3, 8, 8)).latent_dist.mean.dtype == torch.float16


@pytest.mark.parametrize("kwargs, needle", [({"factor": 3}, "power of 2"),
                                            ({"factor": 4, "latent_channels": 12}, "expected 48")])
def test_bad_configs_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        PixelShuffleCodec(**kwargs)


@pytest.fixture(scope="module")
def codec_cascade(tiny_video_folder, tmp_path_factory):
    """The tiny video model with a 2x upscale stage in pixel space: codec by 4 (48 latent channels), low-res folded
    by 2 (12 channels), a residual model with an x0-predicting scheduler that ends on alpha = 1, all in the stage
    folder with its own model_index.json."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from vidiff.testing.tiny import make_scheduler, make_tiny_upscaler

    root = tmp_path_factory.mktemp("codec-cascade")
    folder = root / "model"
    shutil.copytree(tiny_video_folder, folder)
    image = make_tiny_upscaler(root / "x2", in_channels=60, vae=PixelShuffleCodec(factor=4),
                               text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
                               tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"))
    config_path = image / "vae" / "config.json"  # diffusers' upscale pipeline imposes the x4 VAE's 0.08333
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "scaling_factor": 1.0}))
    DDIMScheduler.from_config(make_scheduler().config, prediction_type="sample",
                              set_alpha_to_one=True).save_pretrained(image / "scheduler")
    video = inflate_model_folder(image, root / "x2-video", max_frames=8)
    stage = folder / "upscale"
    for name in ("unet", "vae", "scheduler", "low_res_scheduler"):
        shutil.copytree(video / name, stage / name)
    index = json.loads((video / "model_index.json").read_text())
    (stage / "model_index.json").write_text(json.dumps({**index, "residual": True}))
    (folder / "cascade.json").write_text(json.dumps({"upscale": {"path": "upscale", "scale": 2,
                                                                 "sampling": {"steps": 3, "noise_level": 10}}}))
    return folder


def test_a_stage_loads_its_own_codec_and_scheduler_and_shares_the_rest(codec_cascade):
    base = TextToVideoPipeline.from_pretrained(codec_cascade)
    pipe = load_upscaler(codec_cascade, torch.device("cpu"), torch.float32, base_pipe=base)
    assert isinstance(pipe.vae, PixelShuffleCodec) and type(base.vae).__name__ == "AutoencoderKL"
    assert pipe.text_encoder is base.text_encoder and pipe.scheduler.config.prediction_type == "sample"
    assert (pipe.scale, pipe.fold) == (2, 2) and upscaler_geometry(codec_cascade) == (2, 2)
    assert upscale_settings(codec_cascade) == {"num_inference_steps": 3, "noise_level": 10}
    assert upscale_settings(codec_cascade, steps=5)["num_inference_steps"] == 5
    stage = read_cascade(codec_cascade)["upscale"]
    alone = load_stage(codec_cascade, stage, UpscalePipeline, torch.device("cpu"), torch.float32)
    assert isinstance(alone.vae, PixelShuffleCodec)


def test_pixel_space_upscale_returns_twice_the_size(codec_cascade):
    from vidiff.pipelines.upscale import upscale

    pipe = load_upscaler(codec_cascade, torch.device("cpu"), torch.float32)
    frames = (torch.rand(5, 16, 16, 3) * 255).to(torch.uint8).numpy()
    out = upscale(pipe, frames, 2, num_inference_steps=2, window=4, overlap=2)
    assert out.shape == (5, 32, 32, 3) and out.dtype == frames.dtype
    again = upscale(pipe, frames, 2, num_inference_steps=2, window=4, overlap=2)
    assert (out == again).all()  # seeded


def test_an_untrained_residual_upscaler_returns_the_bicubic_upsample(codec_cascade):
    """A residual stage whose U-Net outputs zero adds nothing: the frames are the low-res frames' bicubic upsample.
    The x0-predicting scheduler with set_alpha_to_one ends on the clean estimate, so no noise is left either."""
    import numpy as np
    import torch.nn.functional as F

    from vidiff.pipelines.upscale import upscale

    pipe = load_upscaler(codec_cascade, torch.device("cpu"), torch.float32)
    assert pipe.config.residual and pipe.scheduler.config.set_alpha_to_one
    torch.nn.init.zeros_(pipe.unet.unet.conv_out.weight)
    torch.nn.init.zeros_(pipe.unet.unet.conv_out.bias)
    frames = (torch.rand(3, 16, 16, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    out = upscale(pipe, frames, 2, num_inference_steps=3)
    lowres = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    reference = F.interpolate(lowres, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    reference = ((reference + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    assert np.abs(out.astype(np.float64) - reference).max() <= 0.5 + 1e-3  # uint8 rounding only


def test_a_residual_upscaler_trains_on_the_difference_from_bicubic(monkeypatch):
    from types import SimpleNamespace

    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from vidiff.pipelines.upscale import default_low_res_scheduler
    from vidiff.training import trainer

    codec = PixelShuffleCodec(factor=4)
    pipe = SimpleNamespace(scale=2, fold=2, low_res_scheduler=default_low_res_scheduler(), vae=codec,
                           config=SimpleNamespace(residual=True))
    upscaling = trainer._Upscaling(pipe, SimpleNamespace(lowres_blur_max=0.0, lowres_noise_max=0))
    coarse = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1  # smooth frames
    video = rearrange(F.interpolate(coarse, size=16, mode="bilinear"), "(b f) c h w -> b c f h w", b=1)

    class ZeroUNet(torch.nn.Module):
        def forward(self, x, t, text, class_labels=None):
            assert x.shape[1] == 48 + 12  # noisy residual + folded low-res condition
            return SimpleNamespace(sample=torch.zeros(x.shape[0], 48, *x.shape[2:]))

    monkeypatch.setattr(trainer, "_encode", lambda *args: torch.zeros(1, 77, 8))
    loss = trainer._loss({"video": video, "caption": ["x"]}, ZeroUNet(), codec, None, None,
                         DDPMScheduler(prediction_type="sample"), trainer.step_generator(0), 0.0,
                         torch.device("cpu"), upscaling=upscaling)
    frames = rearrange(video, "b c f h w -> (b f) c h w")
    bicubic = F.interpolate(F.avg_pool2d(frames, 2), scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    residual = F.pixel_unshuffle(frames, 4) - F.pixel_unshuffle(bicubic, 4)
    torch.testing.assert_close(loss, residual.square().mean())
    assert loss < F.pixel_unshuffle(frames, 4).square().mean() / 10  # far smaller than the frames themselves
