"""Masked-frame conditioning (Make-A-Video's frame interpolation, Singer et al. 2022, section 3.3).

An interpolation model is the base video U-Net with `conv_in` widened from `c` to `2c + 1` input channels: the noisy
latents, the latents of the known frames (zero where a frame is unknown) and a one-channel mask (1 where known).
The new input weights start at zero, so the widened model first computes exactly what the base model computes.
One model covers interpolation (every k-th frame known), extrapolation (the first few frames known) and image
animation (the first frame known); the mask says which.
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import nn

from vidiff.errors import VidiffInputError
from vidiff.models.video_unet import VideoUNet


def widen_conv_in(video_unet: VideoUNet, latent_channels: int | None = None) -> VideoUNet:
    """A copy of `video_unet` whose input takes (noisy latents, known latents, mask): `2c + 1` channels.

    Every weight is copied strictly; the new input channels of `conv_in` start at zero (identity at init).
    """
    old = video_unet.unet.conv_in
    channels = latent_channels or old.in_channels
    if old.in_channels != channels:
        raise VidiffInputError(f"conv_in takes {old.in_channels} channels, not the {channels} latent channels given; "
                               "widen a base (not yet widened) model")
    config = dict(video_unet.config)
    config["spatial_config"] = {**config["spatial_config"], "in_channels": 2 * channels + 1}
    widened = VideoUNet.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    state = video_unet.state_dict()
    weight = state.pop("unet.conv_in.weight")  # (out, c, k, k)
    missing, unexpected = widened.load_state_dict(state, strict=False)
    if missing != ["unet.conv_in.weight"] or unexpected:
        raise RuntimeError(f"widening conv_in left missing={missing} unexpected={unexpected}")
    with torch.no_grad():
        new = torch.zeros_like(widened.unet.conv_in.weight)
        new[:, :channels] = weight
        widened.unet.conv_in.weight.copy_(new)
    return nn.Module.to(widened, device=old.weight.device, dtype=old.weight.dtype)


def interpolation_mask(num_frames: int, keep_every: int) -> torch.Tensor:
    """(f,) bool: frames 0, k, 2k, ... known. The last frame is a keyframe only when `num_frames - 1` is a multiple
    of k (as in every window of `vidiff.pipelines.interpolate`); otherwise the frames after the last keyframe are
    extrapolated."""
    if keep_every < 1:
        raise ValueError(f"keep_every={keep_every} must be at least 1")
    known = torch.zeros(num_frames, dtype=torch.bool)
    known[::keep_every] = True
    return known


def extrapolation_mask(num_frames: int, num_known: int) -> torch.Tensor:
    """(f,) bool: the first `num_known` frames known (1: animate an image; more: continue a clip)."""
    if not 1 <= num_known < num_frames:
        raise ValueError(f"num_known={num_known} must be within 1..{num_frames - 1}")
    known = torch.zeros(num_frames, dtype=torch.bool)
    known[:num_known] = True
    return known


def masked_condition(latents: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """(b, c, f, h, w) latents + (b, f) or (f,) known mask -> (b, c + 1, f, h, w): known latents (0 elsewhere), mask."""
    b, _, f, h, w = latents.shape
    if known.dim() == 1:
        known = known.expand(b, f)
    mask = repeat(known.to(latents.dtype), "b f -> b 1 f h w", h=h, w=w)
    return torch.cat([latents * mask, mask], dim=1)
