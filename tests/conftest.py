"""Shared fixtures: tiny SD-shaped U-Nets with random weights, built on CPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub request would hang; nothing may be fetched in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from einops import rearrange  # noqa: E402

from vidiff.testing.configs import SD15_UNET, SD21_UNET, X4_UPSCALER_UNET, scaled  # noqa: E402

torch.set_num_threads(int(os.environ.get("VIDIFF_TEST_THREADS", "1")))  # tiny ops: 1 thread avoids OpenMP spin-waits

TINY_CONFIGS = {
    "sd15": scaled(SD15_UNET),
    "sd21": scaled(SD21_UNET),
    "x4-upscaler": scaled(X4_UPSCALER_UNET),
}


def tiny_unet2d(name: str = "sd15", seed: int = 0, **overrides) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**TINY_CONFIGS[name], **overrides})
    # diffusers zero-initialises conv_out; randomise it so that outputs carry signal from every layer
    with torch.no_grad():
        unet.conv_out.weight.normal_(0, 0.05)
    return unet.eval()


def randomize_temporal(video_unet, seed: int = 1, std: float = 0.1) -> None:
    """Move temporal layers away from their identity init, as training would."""
    from vidiff.models.temporal import temporal_parameters

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in temporal_parameters(video_unet):
            param.add_(torch.randn(param.shape, generator=generator) * std)


def video_inputs(config: dict, batch: int = 2, frames: int = 8, size: int = 16, seed: int = 0):
    """(sample b c f h w, timestep (b,), encoder_hidden_states (b, n, d), class_labels or None)."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, config["in_channels"], frames, size, size, generator=generator)
    text = torch.randn(batch, 7, config["cross_attention_dim"], generator=generator)
    timestep = torch.tensor([10, 700][:batch] + [400] * max(0, batch - 2))
    labels = torch.tensor([20, 350][:batch]) if config.get("num_class_embeds") else None
    return sample, timestep, text, labels


def frame_by_frame(unet2d, sample, timestep, text, labels=None):
    """The reference: the image U-Net applied to every frame on its own."""
    frames = sample.shape[2]
    out = unet2d(
        rearrange(sample, "b c f h w -> (b f) c h w"),
        timestep.repeat_interleave(frames),
        text.repeat_interleave(frames, dim=0),
        class_labels=None if labels is None else labels.repeat_interleave(frames),
    ).sample
    return rearrange(out, "(b f) c h w -> b c f h w", f=frames)


@pytest.fixture
def sd_unet2d():
    return tiny_unet2d("sd15")


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    """A tiny text-to-image Stable Diffusion folder in diffusers layout, built once per test session."""
    from vidiff.testing.tiny import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_video_folder(tiny_sd_folder, tmp_path_factory):
    """The tiny SD folder inflated into a video model folder (identity temporal layers)."""
    from vidiff.models.inflate_folder import inflate_model_folder

    return inflate_model_folder(tiny_sd_folder, tmp_path_factory.mktemp("video") / "tiny-video", max_frames=16)


def tiny_motion_adapter(seed: int = 0, mid: bool = True, max_len: int = 24):
    """A diffusers `MotionAdapter` for the tiny sd15 U-Net, with every motion module's output non-zero."""
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    config = TINY_CONFIGS["sd15"]
    adapter = MotionAdapter(
        block_out_channels=tuple(config["block_out_channels"]),
        motion_layers_per_block=config["layers_per_block"],
        motion_num_attention_heads=4,
        motion_norm_num_groups=config["norm_num_groups"],
        motion_max_seq_length=max_len,
        use_motion_mid_block=mid,
    )
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "proj_out" in name:
                param.normal_(0, 0.2)
    return adapter.eval()


@pytest.fixture
def one_thread():
    """torch on one thread for the test (`--threads 1` sets it in this process too), restored afterwards: the thread
    count changes float sums, so bit-for-bit comparisons pin it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
