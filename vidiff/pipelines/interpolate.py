"""Keyframes -> (N - 1) * factor + 1 frames with a masked-frame interpolation model (Make-A-Video, section 3.3).

The model (trained with `task: interpolate`) reads the noisy latents beside the known frames' latents and a mask.
An input longer than the model's window runs in windows that each start and end on a keyframe; neighbouring
windows share that keyframe, known to both, so the clip has no seam where they meet. With `keep_known` the input
frames are returned unchanged, pixel for pixel, at their positions (0, factor, 2 * factor, ...).
"""

from __future__ import annotations

import numpy as np
import torch

from vidiff.errors import VidiffInputError
from vidiff.io.video import check_frames
from vidiff.models.interpolation import interpolation_mask, masked_condition
from vidiff.pipelines.prompt_travel import prompt_at
from vidiff.pipelines.text_to_video import TextToVideoPipeline, to_uint8


def window_spans(num_keyframes: int, factor: int, max_frames: int) -> list[tuple[int, int]]:
    """Keyframe index spans (first, last), each window holding (last - first) * factor + 1 <= max_frames frames;
    consecutive spans share their boundary keyframe."""
    gaps = (max_frames - 1) // factor
    if gaps < 1:
        raise VidiffInputError(f"factor {factor} needs windows of {factor + 1} frames but the model takes at most "
                               f"{max_frames}; use a factor of at most {max_frames - 1}")
    return [(first, min(first + gaps, num_keyframes - 1)) for first in range(0, num_keyframes - 1, gaps)]


def check_interpolation_inputs(frames: np.ndarray, factor: int, vae_scale: int = 8) -> None:
    check_frames(frames, min_frames=2)
    if not isinstance(factor, int) or factor < 2:
        raise VidiffInputError(f"factor {factor!r} must be an integer of at least 2 (frames out = (N - 1) * factor + "
                               "1)")
    if frames.shape[1] % vae_scale or frames.shape[2] % vae_scale:
        raise VidiffInputError(f"frame size {frames.shape[2]}x{frames.shape[1]} must be a multiple of {vae_scale} for "
                               "this model's VAE; resize or crop the video first")


@torch.no_grad()
def interpolate(
    pipe: TextToVideoPipeline,
    frames: np.ndarray,
    factor: int,
    prompt: str | dict[int, str] = "",
    num_inference_steps: int = 25,
    guidance_scale: float = 1.0,
    seed: int = 0,
    keep_known: bool = True,
    replace_known: bool = True,
    init: str = "noise",
    strength: float = 1.0,
    max_window: int | None = None,
    decode_chunk_size: int = 8,
    show_progress: bool = False,
) -> np.ndarray:
    """uint8 frames (N, h, w, 3) -> uint8 frames ((N - 1) * factor + 1, h, w, 3). A prompt dict {keyframe: prompt}
    (prompt travel) gives each window the prompt in force at its middle keyframe."""
    # 1. Check inputs
    check_interpolation_inputs(frames, factor, pipe.vae_scale_factor)
    if init not in ("noise", "blend", "nearest") or not 0 < strength <= 1:
        raise VidiffInputError(f"init={init!r} must be noise, blend or nearest, and strength={strength} within (0, 1]")
    max_window = max_window or pipe.unet.config.max_frames
    spans = window_spans(len(frames), factor, max_window)
    device = pipe._execution_device
    _, height, width, _ = frames.shape

    # 2. Keyframe latents (posterior mode, scaled as in training): (c, N, h/8, w/8)
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    keyframes = torch.cat([
        pipe.vae.encode(chunk.to(device, pipe.vae.dtype)).latent_dist.mode()
        for chunk in pixels.split(decode_chunk_size)
    ]).float().mul(pipe.vae.config.scaling_factor).transpose(0, 1)

    # 3. One window at a time: known latents at 0, factor, ...; the rest sampled
    pieces = []
    for index, (first, last) in enumerate(spans):
        length = (last - first) * factor + 1
        known = interpolation_mask(length, factor)
        latents = torch.zeros(1, keyframes.shape[0], length, *keyframes.shape[2:], device=keyframes.device)
        latents[0, :, known] = keyframes[:, first : last + 1]
        generator = torch.Generator().manual_seed(seed + index)
        start, first_step = None, 0
        if init != "noise":
            first_step = int(round(num_inference_steps * (1 - strength)))
            start = noised_guess(pipe, blend_latents(keyframes[:, first : last + 1], factor, init),
                                 num_inference_steps, first_step, generator)
        window = pipe(prompt_at(prompt, (first + last) // 2), num_frames=length, height=height, width=width, num_inference_steps=num_inference_steps,
                      guidance_scale=guidance_scale, generator=generator, latents=start, first_step=first_step,
                      output_type="latent", show_progress=show_progress,
                      condition=masked_condition(latents, known),
                      replace_known=replace_known).frames  # (1, c, length, h/8, w/8)
        pieces.append(window if index == 0 else window[:, :, 1:])  # the shared keyframe once

    # 4. Decode; the known frames go back as they came in
    out = to_uint8(pipe.decode_latents(torch.cat(pieces, dim=2), decode_chunk_size))[0]
    if keep_known:
        out[::factor] = frames
    return out


def blend_latents(keyframes: torch.Tensor, factor: int, how: str = "blend") -> torch.Tensor:
    """(c, n, h, w) keyframe latents -> (1, c, (n - 1) * factor + 1, h, w): each frame between two keyframes is
    their linear blend ("blend") or the nearer one ("nearest")."""
    frames = []
    for i in range((keyframes.shape[1] - 1) * factor + 1):
        a, t = divmod(i, factor)
        w = t / factor if how == "blend" else float(t * 2 > factor)
        frames.append(keyframes[:, a] if t == 0 else (1 - w) * keyframes[:, a] + w * keyframes[:, a + 1])
    return torch.stack(frames, dim=1)[None]


def noised_guess(pipe, guess: torch.Tensor, num_inference_steps: int, first_step: int, generator) -> torch.Tensor:
    """`guess` noised to the schedule's step `first_step`, the sample the loop then starts from. From step 0 too:
    a noise schedule without zero terminal SNR leaves some signal at its first timestep (Lin et al. 2024), and a
    model trained on it reads the layout from that signal (Everaert et al. 2024, "Exploiting the Signal-Leak Bias
    in Diffusion Models"); pure noise has no layout to read."""
    pipe.scheduler.set_timesteps(num_inference_steps)
    t = pipe.scheduler.timesteps[first_step : first_step + 1]
    noise = torch.randn(guess.shape, generator=generator)
    return pipe.scheduler.add_noise(guess.cpu(), noise, t) / pipe.scheduler.init_noise_sigma
