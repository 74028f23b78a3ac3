"""Sliding context windows over the frame axis: FreeNoise (Qiu et al. 2023, "FreeNoise: Tuning-Free Longer Video
Diffusion via Noise Rescheduling", sec. 3.3), as diffusers' `FreeNoiseTransformerBlock` applies them.

A temporal attention trained on at most `max_frames` frames reads a longer clip through windows of `length` frames
that start every `stride` frames. Each window's attention output is weighted frame by frame (flat, or a pyramid that
peaks in the window's middle: the paper's eq. 9) and the overlapping outputs are averaged with those weights. Frame
positions count from each window's first frame, so no window needs a position past `length`.

The windows are diffusers': full windows at 0, stride, 2 * stride, ... while they fit, then, where they do not reach
the last frame, one more window ending on it that fills only the frames no other window reached. diffusers 0.42
divides all of those tail frames by the weight of the first of them (`weights[:, -last_frame_batch_length]`), so
with pyramid weights its last frames shrink where the windows do not tile the clip; here each frame is divided by
its own weight, so a frame one window alone covers is exactly that window's output. Where the windows tile the
clip (`(num_frames - length) % stride == 0`) the two agree.

Only the attention over frames is windowed. What else runs over frames stays over the whole clip, as in diffusers:
the motion module's GroupNorm (statistics over all frames), its feed-forward (per frame) and the temporal
convolutions (`TemporalConv`: each frame reads its two neighbours, so a convolution over the whole clip is exact at
any length and needs no window).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vidiff.errors import VidiffInputError

WEIGHTING_SCHEMES = ("flat", "pyramid", "delayed_reverse_sawtooth")


@dataclass(frozen=True)
class FrameContext:
    """Windows of `length` frames every `stride` frames, blended with `weighting` (diffusers' names)."""

    length: int
    stride: int
    weighting: str = "pyramid"

    def __post_init__(self):
        if not isinstance(self.length, int) or not isinstance(self.stride, int) or self.stride < 1:
            raise VidiffInputError(f"context_length {self.length!r} and context_stride {self.stride!r} must be positive "
                                   "integers")
        if self.stride >= self.length:
            raise VidiffInputError(f"context_stride {self.stride} must be smaller than context_length {self.length}, so "
                                   "that neighbouring windows overlap")
        if self.weighting not in WEIGHTING_SCHEMES:
            raise VidiffInputError(f"unknown weighting_scheme {self.weighting!r}; choose one of "
                                   f"{', '.join(WEIGHTING_SCHEMES)}")

    def windows(self, num_frames: int) -> list[tuple[int, int]]:
        """(start, end) of each window over `num_frames` frames; one window when the clip fits in one."""
        if num_frames <= self.length:
            return [(0, num_frames)]
        spans = [(start, start + self.length) for start in range(0, num_frames - self.length + 1, self.stride)]
        if spans[-1][1] < num_frames:
            spans.append((num_frames - self.length, num_frames))
        return spans

    def weights(self) -> list[float]:
        """Per-frame weights of one window: flat [1, 1, ...], pyramid [1, 2, ..., 2, 1], or diffusers'
        delayed_reverse_sawtooth [0.01, ..., mid, ..., 2, 1]."""
        n, mid = self.length, (self.length + 1) // 2
        if self.weighting == "flat":
            return [1.0] * n
        if self.weighting == "pyramid":
            rise = list(range(1, n // 2 + 1)) if n % 2 == 0 else list(range(1, mid))
            return [float(w) for w in rise + ([] if n % 2 == 0 else [mid]) + rise[::-1]]
        if n % 2 == 0:
            return [0.01] * (n // 2 - 1) + [float(n // 2)] + [float(w) for w in range(n // 2, 0, -1)]
        return [0.01] * (mid - 1) + [float(w) for w in range(mid, 0, -1)]  # diffusers' 0.42 has one 0.01 too many

    def blend(self, h: torch.Tensor, attend: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`attend` over each window of h (n, f, c), the outputs averaged with the window weights: (n, f, c)."""
        num_frames = h.shape[1]
        spans = self.windows(num_frames)
        if len(spans) == 1:
            return attend(h)
        weights = torch.tensor(self.weights(), device=h.device, dtype=h.dtype)  # (length,)
        total = torch.zeros(num_frames, device=h.device, dtype=h.dtype)
        out = torch.zeros_like(h)
        for index, (start, end) in enumerate(spans):
            window = attend(h[:, start:end])  # (n, length, c)
            # a window off the stride grid is the extra last one: it fills only the frames no other window reached
            first = start if start % self.stride == 0 else spans[index - 1][1]
            keep = slice(first - start, end - start)
            out[:, first:end] += window[:, keep] * weights[keep, None]
            total[first:end] += weights[keep]
        return out / total[:, None]
