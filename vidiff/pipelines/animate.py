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
from einops import rearrange

from vidiff.io.video import check_frames
from vidiff.models.interpolation import extrapolation_mask, masked_condition


def image_array(image) -> np.ndarray:
    """A PIL image or a uint8 array (h, w, 3) -> uint8 (h, w, 3) RGB."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image, without importing PIL
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise ValueError(f"image must be a PIL image or a uint8 array (h, w, 3), got "
                         f"{getattr(image, 'shape', type(image).__name__)}")
    check_frames(image[None], "image")
    return image


def video_array(video) -> np.ndarray:
    """A uint8 array (f, h, w, 3) or a list of PIL images / uint8 (h, w, 3) arrays -> uint8 (f, h, w, 3)."""
    if isinstance(video, (list, tuple)):
        if not video:
            raise ValueError("video is an empty list; give at least one frame")
        video = np.stack([image_array(frame) for frame in video])
    check_frames(video, "video")
    return video


def check_size(frames: np.ndarray, height: int, width: int, name: str = "image") -> None:
    """Refuse frames whose size is not the size sampled, naming both."""
    h, w = frames.shape[-3:-1]
    if (h, w) != (height, width):
        raise ValueError(f"the {name} is {w}x{h} but the model samples {width}x{height} frames here; resize the "
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
        raise ValueError("animating an image needs at least 2 frames (frame 0 is the image)")
    known = torch.zeros(shape, device=pipe._execution_device)
    known[:, :, :1] = encode_frames(pipe, image[None], decode_chunk_size).to(known.device)
    return masked_condition(known, extrapolation_mask(num_frames, 1).to(known.device))
