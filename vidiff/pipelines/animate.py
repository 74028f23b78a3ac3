"""Image to video: the given image is frame 0, and a masked-frame model continues it.

The masked-frame (interpolation) model reads, beside the noisy latents, the latents of the known frames and a mask
(vidiff.models.interpolation). Trained with extrapolation masks too (the first 1-4 frames known,
`extrapolate_fraction`), the same model animates an image: frame 0 known, every later frame sampled. Frame 0's
latents are also written into the sample before each step, noised to that step (`replace_known`), and the image
comes back as frame 0 pixel for pixel.

`TextToVideoPipeline.__call__(image=...)` runs this; `VideoCascadePipeline(image=...)` runs it on its interpolation
stage and then the later stages, as for text.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange

from vidiff.errors import VidiffInputError
from vidiff.io.video import check_frames
from vidiff.models.interpolation import extrapolation_mask, masked_condition


def image_array(image) -> np.ndarray:
    """A PIL image or a uint8 array (h, w, 3) -> uint8 (h, w, 3) RGB."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image, without importing PIL
        image = np.array(image.convert("RGB"))
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise VidiffInputError(f"image must be a PIL image or a uint8 array (h, w, 3), got "
                               f"{getattr(image, 'shape', type(image).__name__)}")
    check_frames(image[None], "image")
    return image


def video_array(video) -> np.ndarray:
    """A uint8 array (f, h, w, 3) or a list of PIL images / uint8 (h, w, 3) arrays -> uint8 (f, h, w, 3)."""
    if isinstance(video, (list, tuple)):
        if not video:
            raise VidiffInputError("video is an empty list; give at least one frame")
        video = np.stack([image_array(frame) for frame in video])
    check_frames(video, "video")
    return video


def check_size(frames: np.ndarray, height: int, width: int, name: str = "image") -> None:
    """Refuse frames whose size is not the size sampled, naming both."""
    h, w = frames.shape[-3:-1]
    if (h, w) != (height, width):
        raise VidiffInputError(f"the {name} is {w}x{h} but the model samples {width}x{height} frames here; resize the "
                               f"{name}, or sample at its size with height={h}, width={w} (--height {h} --width {w})")


@torch.no_grad()
def encode_frames(pipe, frames: np.ndarray, decode_chunk_size: int = 8, generator=None,
                  sample: bool = False) -> torch.Tensor:
    """uint8 frames (f, h, w, 3) -> scaled latents (1, c, f, h/8, w/8): the VAE posterior's mode, or with `sample` a
    draw from it with `generator`, `decode_chunk_size` frames at a time (as diffusers' encode_video)."""
    device = pipe._execution_device
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # (f, 3, h, w) in [-1, 1]
    latents = []
    for chunk in pixels.split(decode_chunk_size):
        posterior = pipe.vae.encode(chunk.to(device, pipe.vae.dtype)).latent_dist
        latents.append(posterior.sample(generator) if sample else posterior.mode())
    latents = torch.cat(latents).float() * pipe.vae.config.scaling_factor
    return rearrange(latents, "f c h w -> 1 c f h w")


def image_condition(pipe, image: np.ndarray, shape: tuple[int, ...], decode_chunk_size: int = 8) -> torch.Tensor:
    """The masked-frame condition (b, c + 1, f, h, w) of clips of `shape` (b, c, f, h, w) that start on `image`."""
    batch, channels, num_frames = shape[:3]
    if num_frames < 2:
        raise VidiffInputError("animating an image needs at least 2 frames (frame 0 is the image)")
    known = torch.zeros(shape, device=pipe._execution_device)
    known[:, :, :1] = encode_frames(pipe, image[None], decode_chunk_size).to(known.device)
    return masked_condition(known, extrapolation_mask(num_frames, 1).to(known.device))


# The weight w of reconstruction guidance. On the default model (8 held-out first frames, 25 steps, docs/long-clips.md)
# 2 left frame 1's object 4-11 px from the image's in 7 of 8 clips; 8 and 16 kept it within 3 px in 7 of 8 (16:
# 0.8-3.1 px), every clip moving the prompt's way.
RECONSTRUCTION_GUIDANCE = 16.0


def image_known(pipe, image: np.ndarray, shape: tuple[int, ...], generator=None,
                decode_chunk_size: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a text-to-video model: (known latents (b, c, f, h, w) with the image's at frame 0, the noise that noises
    them, the (1, 1, f, 1, 1) mask of frame 0), the replacement the sampling loop applies before each step."""
    if shape[2] < 2:
        raise VidiffInputError("animating an image needs at least 2 frames (frame 0 is the image)")
    known = encode_frames(pipe, image[None], decode_chunk_size).to(pipe._execution_device, pipe.unet.dtype)
    known = known.expand(shape[0], -1, shape[2], -1, -1)
    noise = randn_tensor(known.shape, generator=generator, device=known.device, dtype=known.dtype)
    mask = extrapolation_mask(shape[2], 1).to(known.device).view(1, 1, -1, 1, 1)
    return known, noise, mask


def reconstruction_guided(pipe, latents: torch.Tensor, t, text, guidance_scale: float | None,
                          known: tuple[torch.Tensor, torch.Tensor, torch.Tensor], weight: float) -> torch.Tensor:
    """The model's prediction with reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", eq. 7):
    the denoised estimate of the unknown frames moves against the gradient of how far the estimate of the known
    frames is from them, x~b = x^b - (w alpha_t / 2) grad_zb ||xa - x^a||^2, so that the frames the model makes agree
    with the image the replacement writes into frame 0 (replacement alone leaves them unrelated). The prediction is
    returned in the scheduler's prediction type; computed in the variance-preserving sample x_t = a z + s eps that
    `scale_model_input` gives."""
    known_latents, _, mask = known
    scheduler = pipe.scheduler
    alpha_bar = scheduler.alphas_cumprod.to(latents.device)[int(t)]
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    with torch.enable_grad():
        z = latents.detach().requires_grad_(True)
        prediction = pipe.predict_noise(z, t, text, None, guidance_scale)
        x_t = scheduler.scale_model_input(z, t)
        x0 = _denoised(scheduler.config.prediction_type, prediction, x_t, a, s)
        distance = ((x0 - known_latents) ** 2 * mask).sum()
        (grad,) = torch.autograd.grad(distance, z)
    x0 = x0.detach() - weight * a / 2 * grad * (~mask)
    x_t = x_t.detach()
    if scheduler.config.prediction_type == "epsilon":
        return (x_t - a * x0) / s
    if scheduler.config.prediction_type == "v_prediction":
        return (a * x_t - x0) / s
    return x0


def _denoised(prediction_type: str, prediction, x_t, a, s):
    """x0 from a model output of `prediction_type` at a sample x_t = a x0 + s eps."""
    if prediction_type == "epsilon":
        return (x_t - s * prediction) / a.clamp(min=1e-8)
    if prediction_type == "v_prediction":
        return a * x_t - s * prediction
    if prediction_type == "sample":
        return prediction
    raise VidiffInputError(f"reconstruction guidance does not know prediction_type {prediction_type!r}")
