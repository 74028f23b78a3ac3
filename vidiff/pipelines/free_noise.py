"""Long clips at bounded memory: FreeNoise (Qiu et al. 2023) on a pipeline whose U-Net is a `VideoUNet`.

The methods and their meaning are diffusers' (`AnimateDiffFreeNoiseMixin`, diffusers 0.42):
- `enable_free_noise(context_length, context_stride, weighting_scheme, noise_type)`: every temporal attention reads
  the clip through windows of `context_length` frames every `context_stride` frames, blended with the weighting
  (vidiff.models.free_noise.FrameContext), so clips longer than the model's `max_frames` run;
- noise rescheduling (`noise_type`): "shuffle_context" (the paper's eq. 7) starts every later window from a
  shuffle of the noise `context_length` frames before it, so all windows reuse the first window's noise;
  "repeat_context" repeats the first window's noise; "random" draws every frame afresh;
- `enable_free_noise_split_inference`: spatial layers over chunks of frames, motion modules over chunks of
  positions (VideoUNet.set_split_inference);
- `disable_free_noise()`.
Two deliberate departures: diffusers' "repeat_context" draws the whole clip's noise and then repeats it whole, which
keeps the first `num_frames` frames as drawn, so it behaves as "random"; here it repeats the first window. And a
`context_length` above the model's `max_frames`, which diffusers only warns about, is refused: the frame position
table has `max_frames` rows.
"""

from __future__ import annotations

import torch

from vidiff.errors import VidiffInputError
from vidiff.models.free_noise import FrameContext
from vidiff.pipelines.prompt_travel import Interpolation, lerp

NOISE_TYPES = ("shuffle_context", "repeat_context", "random")


class FreeNoiseMixin:
    """FreeNoise for `TextToVideoPipeline` (needs `self.unet`, a VideoUNet)."""

    _free_noise_noise_type: str = "shuffle_context"
    _free_noise_prompt_interpolation_callback: Interpolation = staticmethod(lerp)

    def enable_free_noise(self, context_length: int | None = 16, context_stride: int = 4,
                          weighting_scheme: str = "pyramid", noise_type: str = "shuffle_context",
                          prompt_interpolation_callback: Interpolation | None = None) -> None:
        """Sample clips of any length through sliding windows over frames. context_length None: the model's
        max_frames. prompt_interpolation_callback(start_frame, end_frame, start_embeds, end_embeds): how a
        prompt dict's embeddings are interpolated between keyframes (default: linearly)."""
        if noise_type not in NOISE_TYPES:
            raise VidiffInputError(f"unknown noise_type {noise_type!r}; choose one of {', '.join(NOISE_TYPES)}")
        unet = _video_unet(self.unet)
        unet.set_frame_context(FrameContext(context_length or unet.config.max_frames, context_stride,
                                            weighting_scheme))
        self._free_noise_noise_type = noise_type
        self._free_noise_prompt_interpolation_callback = prompt_interpolation_callback or lerp

    def disable_free_noise(self) -> None:
        """Back to attention over the whole clip (up to the model's max_frames), and noise drawn per frame."""
        _video_unet(self.unet).set_frame_context(None)

    def enable_free_noise_split_inference(self, spatial_split_size: int = 256, temporal_split_size: int = 16) -> None:
        """Spatial layers over at most `temporal_split_size` frames at a time, motion modules over at most
        `spatial_split_size` positions at a time: the same result with memory bounded by the chunks."""
        _video_unet(self.unet).set_split_inference(spatial_split_size, temporal_split_size)

    @property
    def free_noise_enabled(self) -> bool:
        return _video_unet(self.unet).frame_context is not None

    @property
    def free_noise_context(self) -> FrameContext | None:
        return _video_unet(self.unet).frame_context

    def reschedule_noise(self, noise: torch.Tensor, generator=None) -> torch.Tensor:
        """Starting noise (b, c, f, h, w) rescheduled for the windows, in place, as diffusers'
        `_prepare_latents_free_noise` does (the same draws from `generator`, so the same noise)."""
        context = self.free_noise_context
        if context is None or self._free_noise_noise_type == "random":
            return noise
        length, stride, num_frames = context.length, context.stride, noise.shape[2]
        if self._free_noise_noise_type == "repeat_context":
            repeats = -(-num_frames // length)
            return noise[:, :, :length].repeat(1, 1, repeats, 1, 1)[:, :, :num_frames].contiguous()
        # one generator shuffles every clip alike (as diffusers); a list of them, each its own clip
        groups = [(slice(i, i + 1), g) for i, g in enumerate(generator)] if isinstance(generator, list) \
            else [(slice(None), generator)]
        for rows, clip_generator in groups:
            device = clip_generator.device if clip_generator is not None else "cpu"
            for start in range(length, num_frames, stride):
                source = start - length  # frames [start, start + stride) reuse a shuffle of [source, source + stride)
                count = min(num_frames, source + stride) - source
                order = torch.arange(source, source + count)[torch.randperm(count, generator=clip_generator,
                                                                             device=device).cpu()]
                end = min(num_frames, start + count)
                noise[rows, :, start:end] = noise[rows, :, order[: end - start].to(noise.device)]
        return noise


def _video_unet(unet):
    return getattr(unet, "_orig_mod", unet)  # through torch.compile's wrapper
