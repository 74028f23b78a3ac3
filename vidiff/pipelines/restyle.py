"""Video to video (SDEdit, Meng et al. 2022, on clips): the input video's latents, noised part of the way, are
denoised under a new prompt. `strength` in (0, 1] says how far: 1 starts from noise alone, lower keeps more of the
input's layout and motion.

The steps follow diffusers' `AnimateDiffVideoToVideoPipeline` (0.42), so that the same weights, options and
generator give the same clip: the video is encoded frame chunk by chunk as draws from the VAE posterior, the noise is
drawn in diffusers' (b, f, c, h, w) order, and the schedule of `num_inference_steps` is cut to its last
`int(num_inference_steps * strength)` steps (at least one), the latents noised to the first of them.
`TextToVideoPipeline.__call__(video=..., strength=...)` runs this; a video longer than the model's window needs
`enable_free_noise` (vidiff.pipelines.free_noise), as any long clip does.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from vidiff.errors import VidiffInputError
from vidiff.pipelines.animate import encode_frames


def check_strength(strength: float) -> None:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise VidiffInputError(f"strength {strength!r} must be within (0, 1]: 1 redraws everything, lower keeps more of "
                               "the input video")


def first_step(num_inference_steps: int, strength: float) -> int:
    """The index in the schedule that a restyle starts from (diffusers' get_timesteps), leaving >= 1 step."""
    return num_inference_steps - max(1, min(int(num_inference_steps * strength), num_inference_steps))


def video_latents(pipe, video: np.ndarray, batch: int, t: torch.Tensor, generator=None,
                  decode_chunk_size: int = 8) -> torch.Tensor:
    """The input video's latents noised to timestep `t`, (batch, c, f, h/8, w/8), each clip with its own noise."""
    encode_generator = generator[0] if isinstance(generator, list) else generator
    clean = encode_frames(pipe, video, decode_chunk_size, encode_generator, sample=True).to(pipe.unet.dtype)
    clean = clean.permute(0, 2, 1, 3, 4).expand(batch, -1, -1, -1, -1)  # (b, f, c, h, w): diffusers' noise order
    noise = randn_tensor(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    return pipe.scheduler.add_noise(clean, noise, t.reshape(1)).permute(0, 2, 1, 3, 4)
