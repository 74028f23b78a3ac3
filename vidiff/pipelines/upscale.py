"""Low-resolution frames -> frames `scale` times larger, with a temporally inflated upscaler U-Net.

The U-Net has the layout of Stable Diffusion's x4 upscaler (diffusers' `StableDiffusionUpscalePipeline`): its
input is the noisy latents concatenated with the low-resolution frames, which are first noised by a DDPM
`low_res_scheduler` to `noise_level`, and that level is also its class label. Two generalisations:
- Low-resolution frames larger than the latents are folded into channels (`pixel_unshuffle` by r), so an upscaler
  whose VAE downsamples more than its scale (the tiny default: 8x VAE, 2x scale, r = 4) sees every pixel. The
  x4 upscaler is the case r = 1: 7 input channels = 4 latents + 3 RGB. The scale is the VAE's factor over r.
- Video: temporal layers (inflated like the base model); every frame starts from the same noise, as Make-A-Video
  does so that invented detail agrees across frames; and clips longer than `window` frames are denoised in
  overlapping windows whose noise predictions are averaged where they overlap at every step (MultiDiffusion,
  Bar-Tal et al. 2023), so there are no seams. Memory is bounded by `window` (U-Net) and `decode_chunk_size`
  (VAE decode).
- Residual (optional, `residual` in model_index.json): the diffusion runs on the difference between the frames'
  latents and the latents of the low-res frames' bicubic upsample, as SRDiff (Li et al. 2022) does in pixel space;
  the U-Net only has to add what bicubic misses, and an untrained residual model returns bicubic.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange

from vidiff.errors import VidiffInputError
from vidiff.io.video import check_frames
from vidiff.model_folder import read_index
from vidiff.pipelines.text_to_video import TextToVideoOutput, TextToVideoPipeline, to_uint8

DEFAULT_NOISE_LEVEL = 20  # StableDiffusionUpscalePipeline's default
MAX_NOISE_LEVEL = 350  # ... and the x4 upscaler's max_noise_level


def default_low_res_scheduler() -> DDPMScheduler:
    """The x4 upscaler's noise-augmentation schedule: DDPM, linear betas 1e-4..0.02 over 1000 steps."""
    return DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def lowres_fold(unet_in_channels: int, latent_channels: int) -> int:
    """r such that the U-Net reads latents + 3 r^2 low-resolution channels (1 for the x4 upscaler's 7 channels)."""
    extra = unet_in_channels - latent_channels
    r = math.isqrt(max(extra // 3, 0))
    if extra <= 0 or 3 * r * r != extra:
        raise VidiffInputError(f"a U-Net reading {unet_in_channels} channels is not an upscaler for {latent_channels} "
                               f"latent channels: it must read {latent_channels} + 3 * r^2 (7 for r = 1, 52 for r = 4)")
    return r


def fold_lowres(lowres: torch.Tensor, r: int) -> torch.Tensor:
    """(b, 3, f, h, w) -> (b, 3 r^2, f, h / r, w / r): each r x r block of pixels becomes channels."""
    b = lowres.shape[0]
    x = F.pixel_unshuffle(rearrange(lowres, "b c f h w -> (b f) c h w"), r) if r > 1 else lowres
    return rearrange(x, "(b f) c h w -> b c f h w", b=b) if r > 1 else x


def bicubic_latents(vae, lowres: torch.Tensor, scale: int, chunk: int = 8) -> torch.Tensor:
    """Low-res frames (b, 3, f, h, w) in [-1, 1] -> the latents (b, c, f, H / s, W / s) of their bicubic upsample by
    `scale`, scaled as the diffusion sees them: the base that a residual upscaler adds its output to."""
    b = lowres.shape[0]
    frames = rearrange(lowres, "b c f h w -> (b f) c h w")
    up = F.interpolate(frames.float(), scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)
    latents = torch.cat([vae.encode(x.to(vae.dtype)).latent_dist.mode() for x in up.split(chunk)])
    return rearrange(latents.float() * vae.config.scaling_factor, "(b f) c h w -> b c f h w", b=b)


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frames of windows of `window` frames covering 0..num_frames-1, consecutive ones sharing >= `overlap`."""
    if num_frames <= window:
        return [0]
    if not 0 <= overlap < window:
        raise VidiffInputError(f"overlap {overlap} must be within 0..{window - 1} for windows of {window} frames")
    count = math.ceil((num_frames - overlap) / (window - overlap))
    return [round(i * (num_frames - window) / (count - 1)) for i in range(count)]


def pipeline_settings(index: dict) -> dict:
    """An UpscalePipeline's own settings, from its folder's model_index.json (defaults: the x4 upscaler's)."""
    return {"max_noise_level": int(index.get("max_noise_level", MAX_NOISE_LEVEL)),
            "residual": bool(index.get("residual", False))}


class UpscalePipeline(TextToVideoPipeline):
    """Low-resolution clip (+ optional prompt) -> a clip `scale` times larger; see the module docstring."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, low_res_scheduler: DDPMScheduler,
                 max_noise_level: int = MAX_NOISE_LEVEL, residual: bool = False):
        super().__init__(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.register_modules(low_res_scheduler=low_res_scheduler)
        self.register_to_config(max_noise_level=max_noise_level, residual=residual)
        self.fold = lowres_fold(unet.unet.config.in_channels, vae.config.latent_channels)
        if self.vae_scale_factor % self.fold:
            raise VidiffInputError(f"the VAE downsamples {self.vae_scale_factor}x, which r = {self.fold} does not "
                                   "divide")
        self.scale = self.vae_scale_factor // self.fold

    @classmethod
    def from_pretrained(cls, folder, torch_dtype: torch.dtype | None = None, inflate_image_model: bool = False):
        """Load an upscaler video model folder (`vidiff inflate` of an x4-upscaler-layout folder, or training).
        A folder without `low_res_scheduler/` gets the x4 upscaler's: DDPM, linear betas 1e-4..0.02."""
        folder = Path(folder)
        base = TextToVideoPipeline.from_pretrained(folder, torch_dtype=torch_dtype,
                                                   inflate_image_model=inflate_image_model)
        if (folder / "low_res_scheduler").is_dir():
            low_res = DDPMScheduler.from_pretrained(folder / "low_res_scheduler")
        else:
            low_res = default_low_res_scheduler()
        return cls(**base.components, low_res_scheduler=low_res, **pipeline_settings(read_index(folder)))

    def noise_lowres(self, lowres: torch.Tensor, noise_level: torch.Tensor, generator=None) -> torch.Tensor:
        """Noise augmentation of the condition, as the x4 upscaler: q(x_t | x_0) of the low_res_scheduler."""
        noise = randn_tensor(lowres.shape, generator=generator, device=lowres.device, dtype=lowres.dtype)
        return self.low_res_scheduler.add_noise(lowres, noise, noise_level)

    @torch.no_grad()
    def __call__(
        self,
        frames: np.ndarray | torch.Tensor,
        prompt: str = "",
        negative_prompt: str | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        noise_level: int = DEFAULT_NOISE_LEVEL,
        generator: torch.Generator | None = None,
        shared_noise: bool = True,
        window: int | None = None,
        overlap: int = 4,
        decode_chunk_size: int = 8,
        output_type: str = "np",
        show_progress: bool = True,
    ) -> TextToVideoOutput:
        """frames: uint8 (f, h, w, 3), or float (1, 3, f, h, w) in [-1, 1]. Returns (1, f, h*s, w*s, 3) uint8 for
        output_type "np" (s = self.scale), float (1, 3, f, H, W) in [0, 1] for "pt", latents for "latent"."""
        # 1. Check inputs
        lowres = self._lowres_tensor(frames)
        _, _, num_frames, height, width = lowres.shape
        window = window or self.unet.config.max_frames
        self.check_inputs(min(num_frames, window), height * self.scale, width * self.scale, num_inference_steps,
                          output_type)
        if height % self.fold or width % self.fold:
            raise VidiffInputError(f"frame size {width}x{height} must be a multiple of {self.fold} for this upscaler")
        if not 0 <= noise_level <= self.config.max_noise_level:
            raise VidiffInputError(f"noise_level={noise_level} must be within 0..{self.config.max_noise_level}")
        device = self._execution_device
        guided = guidance_scale > 1.0

        # 2. Encode the prompt (empty by default: the stage is trained on unlabeled video)
        text = self.encode_prompt([prompt], [negative_prompt or ""] if guided else None, device)

        # 3. Noise-augmented condition (b, 3 r^2, f, H/8, W/8); the level is also the U-Net's class label
        level = torch.tensor([noise_level], dtype=torch.long, device=device)
        lowres = lowres.to(device, self.unet.dtype)
        base = bicubic_latents(self.vae, lowres, self.scale, decode_chunk_size) if self.config.residual else 0
        condition = fold_lowres(self.noise_lowres(lowres, level, generator), self.fold)
        condition = torch.cat([condition] * 2) if guided else condition
        labels = torch.cat([level] * 2) if guided else level

        # 4. Starting noise: one draw shared by every frame (Make-A-Video), or one per frame
        latent_h, latent_w = condition.shape[-2:]
        shape = (1, self.vae.config.latent_channels, 1 if shared_noise else num_frames, latent_h, latent_w)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        latents = latents.expand(-1, -1, num_frames, -1, -1).clone() * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = self._step_kwargs(generator, 0.0)

        # 5. Denoising loop; each step averages the overlapping windows' predictions (MultiDiffusion)
        starts = window_starts(num_frames, window, overlap)
        self.use_conv_layout(device)
        for t in self.progress_bar(self.scheduler.timesteps) if show_progress else self.scheduler.timesteps:
            total = torch.zeros_like(latents)
            count = torch.zeros(num_frames, device=device, dtype=latents.dtype)
            for start in starts:
                span = slice(start, min(start + window, num_frames))
                x = torch.cat([latents[:, :, span]] * 2) if guided else latents[:, :, span]
                x = torch.cat([self.scheduler.scale_model_input(x, t), condition[:, :, span]], dim=1)
                pred = self.unet(x, t, text, class_labels=labels).sample
                if guided:
                    uncond, cond = pred.chunk(2)
                    pred = uncond + guidance_scale * (cond - uncond)
                total[:, :, span] += pred
                count[span] += 1
            latents = self.scheduler.step(total / count.view(1, 1, -1, 1, 1), t, latents, **step_kwargs).prev_sample

        # 6. Decode in chunks of frames (a residual model's output is added to the bicubic upsample)
        latents = latents + base
        if output_type == "latent":
            return TextToVideoOutput(frames=latents)
        video = self.decode_latents(latents, decode_chunk_size)
        self.maybe_free_model_hooks()
        return TextToVideoOutput(frames=to_uint8(video) if output_type == "np" else video)

    def _lowres_tensor(self, frames) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            check_frames(frames)
            return rearrange(torch.from_numpy(frames).float().div(127.5).sub(1), "f h w c -> 1 c f h w")
        if frames.ndim != 5 or frames.shape[:2] != (1, 3):
            raise VidiffInputError(f"frames must be a (1, 3, f, h, w) tensor, got {tuple(frames.shape)}")
        return frames.float()


def upscale_passes(scale: int, model_scale: int) -> int:
    """How many passes of a `model_scale`x upscaler make `scale`x: scale must be a power of model_scale."""
    passes, reached = 0, 1
    while isinstance(scale, int) and reached < scale:
        reached *= model_scale
        passes += 1
    if not isinstance(scale, int) or scale < 2 or reached != scale:
        raise VidiffInputError(f"scale {scale!r} is not reachable with this {model_scale}x upscaler; use "
                               f"{model_scale}, {model_scale ** 2} or another power of {model_scale}")
    return passes


@torch.no_grad()
def upscale(
    pipe: UpscalePipeline,
    frames: np.ndarray,
    scale: int,
    prompt: str = "",
    num_inference_steps: int = 25,
    guidance_scale: float = 1.0,
    noise_level: int = DEFAULT_NOISE_LEVEL,
    seed: int = 0,
    shared_noise: bool = True,
    window: int | None = None,
    overlap: int = 4,
    decode_chunk_size: int = 8,
    show_progress: bool = False,
) -> np.ndarray:
    """uint8 frames (f, h, w, 3) -> uint8 (f, h * scale, w * scale, 3), in passes of the model's own scale."""
    passes = upscale_passes(scale, pipe.scale)
    check_frames(frames)
    for index in range(passes):
        frames = pipe(frames, prompt=prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                      noise_level=noise_level, generator=torch.Generator().manual_seed(seed + index),
                      shared_noise=shared_noise, window=window, overlap=overlap, decode_chunk_size=decode_chunk_size,
                      show_progress=show_progress).frames[0]
    return frames
