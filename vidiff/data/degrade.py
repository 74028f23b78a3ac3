"""Degradations that make a super-resolution stage's training input from unlabeled high-resolution clips."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange


def degrade(frames: torch.Tensor, scale: int, blur_sigma: float = 0.0) -> torch.Tensor:
    """High-resolution frames (b, c, f, H, W) in [-1, 1] -> low resolution (b, c, f, H / scale, W / scale):
    an optional Gaussian blur, then an area (box) downsample. The training data of a super-resolution stage."""
    b = frames.shape[0]
    x = rearrange(frames, "b c f h w -> (b f) c h w")
    if blur_sigma > 0:
        radius = max(1, math.ceil(3 * blur_sigma))
        taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (taps / blur_sigma) ** 2)
        kernel = kernel / kernel.sum()
        c = x.shape[1]
        x = F.pad(x, (radius,) * 4, mode="replicate")
        x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    x = F.avg_pool2d(x, scale)
    return rearrange(x, "(b f) c h w -> b c f h w", b=b)
