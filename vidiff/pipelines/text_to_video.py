"""Text-to-video sampling with an inflated `VideoUNet`: prompt -> latents `b c f h w` -> uint8 frames.

The loop is the Stable Diffusion sampling loop (diffusers' `StableDiffusionPipeline`) run on clips: the same
prompt encoding, classifier-free guidance with both halves in one batch, scheduler steps and latent scaling. With
identity temporal layers it therefore reproduces the image pipeline frame by frame, which the tests check.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler,
                       EulerDiscreteScheduler, UNet2DConditionModel)
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange

from vidiff.errors import VidiffInputError
from vidiff.model_folder import COMPONENTS, check_model_folder, component_class, component_config, vae_scale_factor
from vidiff.models.inflate import inflate_unet
from vidiff.models.video_unet import VideoUNet
from vidiff.pipelines import animate, restyle
from vidiff.pipelines.free_noise import FreeNoiseMixin
from vidiff.pipelines.lora import VideoLoraLoaderMixin
from vidiff.pipelines.prompt_travel import encode_travel
from vidiff.weights import loading

SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
}
OUTPUT_TYPES = ("np", "pt", "latent")


@dataclass
class TextToVideoOutput(BaseOutput):
    frames: np.ndarray | torch.Tensor
    """np: uint8 (batch, f, h, w, c); pt: float (batch, c, f, h, w) in [0, 1]; latent: (batch, c, f, h/8, w/8)."""


class TextToVideoPipeline(FreeNoiseMixin, DiffusionPipeline, VideoLoraLoaderMixin):
    """Prompt -> video with a `VideoUNet`, a VAE, a CLIP text encoder and tokenizer, and any diffusers scheduler.

    Also: long clips through FreeNoise windows (`enable_free_noise`, vidiff.pipelines.free_noise), a prompt per
    keyframe (`prompt={0: ..., 24: ...}`, vidiff.pipelines.prompt_travel), image to video with a masked-frame model
    (`image=`, vidiff.pipelines.animate) and video to video (`video=`, `strength=`, vidiff.pipelines.restyle). LoRAs
    load as in diffusers' `AnimateDiffPipeline`: `load_lora_weights`, `set_adapters`, `fuse_lora`, ...
    (vidiff.pipelines.lora).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    # The U-Net's convolution layout: "auto" (channels-last on the CPU, contiguous elsewhere; see use_conv_layout),
    # "channels_last" or "contiguous". scripts/bench.py --ab forces each to measure it.
    conv_layout: str = "auto"

    def __init__(self, vae: AutoencoderKL, text_encoder, tokenizer, unet: VideoUNet, scheduler):
        super().__init__()
        check_tokenizer(tokenizer, text_encoder)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = vae_scale_factor(vae.config)

    def use_conv_layout(self, device: torch.device) -> None:
        """Put the U-Net in the convolution layout for `device` (`set_conv_layout`, or `self.conv_layout`)."""
        set_conv_layout(self.unet, device, self.conv_layout)

    def compile_unet(self, **options: Any) -> None:
        """Run the U-Net through `torch.compile(**options)` from the next call on (the first call compiles).

        Measured in scripts/bench.py --compile (BENCHMARKS.md); the compiled output is checked against eager there
        and in the tests. The layout for the device is set first, so that compiling sees the layout it will run in.
        """
        self.use_conv_layout(self._execution_device)
        self.unet = torch.compile(getattr(self.unet, "_orig_mod", self.unet), **options)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, torch_dtype: torch.dtype | None = None,
                        inflate_image_model: bool = False) -> TextToVideoPipeline:
        """Load a video model folder written by `vidiff inflate` (or training): each component by its named class.

        inflate_image_model: also accept a Stable Diffusion folder, inflating its U-Net with default settings.
        """
        folder = Path(folder)
        check_model_folder(folder, (*COMPONENTS, "unet"))
        with loading(folder):  # a weights file that will not load: one line naming it
            unet_config = component_config(folder, "unet")
            dtype = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
            if unet_config.get("_class_name") == "VideoUNet":
                unet = VideoUNet.from_pretrained(folder / "unet", **dtype)
            elif inflate_image_model and unet_config.get("_class_name") == "UNet2DConditionModel":
                unet = inflate_unet(UNet2DConditionModel.from_pretrained(folder / "unet", **dtype))
            else:
                raise VidiffInputError(f"{folder / 'unet'} holds a {unet_config.get('_class_name')}, not a VideoUNet; "
                                       "make a video model with `vidiff inflate`")
            components = {"unet": unet}
            for name in COMPONENTS:
                kwargs = dtype if name in ("vae", "text_encoder") else {}
                components[name] = component_class(folder, name).from_pretrained(folder / name, **kwargs)
        return cls(**components)

    def set_scheduler(self, name: str) -> None:
        """Swap the scheduler for 'ddim', 'dpm++' or 'euler', keeping the model's noise schedule."""
        if name not in SCHEDULERS:
            raise VidiffInputError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
        cls, options = SCHEDULERS[name]
        self.scheduler = cls.from_config(self.scheduler.config, **options)

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], negative_prompts: list[str] | None, device) -> torch.Tensor:
        """Text embeddings `(n, tokens, d)`; with negatives, `[negatives; prompts]` in one tensor, as SD orders them."""
        texts = prompts if negative_prompts is None else [*negative_prompts, *prompts]
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        )
        mask = tokens.attention_mask.to(device) if getattr(self.text_encoder.config, "use_attention_mask", False) else None
        embeds = self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
        return embeds.to(dtype=self.unet.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int = 8) -> torch.Tensor:
        """Latents `b c f h w` -> frames in [0, 1], `b c f H W`, decoding `decode_chunk_size` frames at a time."""
        frames = rearrange(latents, "b c f h w -> (b f) c h w") / self.vae.config.scaling_factor
        decoded = [
            self.vae.decode(chunk.to(self.vae.dtype)).sample.float()
            for chunk in frames.split(decode_chunk_size)
        ]
        video = torch.cat(decoded).div(2).add(0.5).clamp(0, 1)
        return rearrange(video, "(b f) c h w -> b c f h w", b=latents.shape[0])

    def check_inputs(self, num_frames: int, height: int, width: int, steps: int, output_type: str) -> None:
        self.unet.check_num_frames(num_frames)
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % self.vae_scale_factor:
                raise VidiffInputError(f"{name}={value} must be a positive multiple of {self.vae_scale_factor} for "
                                       "this VAE")
        if steps < 1:
            raise VidiffInputError(f"num_inference_steps={steps} must be at least 1")
        if output_type not in OUTPUT_TYPES:
            raise VidiffInputError(f"unknown output_type {output_type!r}; choose one of {', '.join(OUTPUT_TYPES)}")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | dict[int, str],
        negative_prompt: str | list[str] | dict[int, str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        num_videos_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        decode_chunk_size: int = 8,
        show_progress: bool = True,
        condition: torch.Tensor | None = None,
        replace_known: bool = False,
        first_step: int = 0,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
        image=None,
        video=None,
        strength: float = 0.6,
        reconstruction_guidance: float = animate.RECONSTRUCTION_GUIDANCE,
    ) -> TextToVideoOutput:
        """Sample clips. `prompt` may be a dict {frame: prompt} (prompt travel); num_frames None: 16, or the video's.
        image (a PIL image or uint8 (h, w, 3)): frame 0 of every clip, returned pixel for pixel, which the model
        continues: a masked-frame model reads it as its known frame; a text-to-video model has it written into its
        sample each step and is steered to agree with it with `reconstruction_guidance` (vidiff.pipelines.animate).
        video (uint8 (f, h, w, 3) or a list of frames) and strength in (0, 1]: restyle the video under the prompt,
        from its latents noised part of the way (vidiff.pipelines.restyle).
        `condition` (b, c + 1, f, h, w): for a masked-frame (interpolation) model, the known frames'
        latents and the mask (vidiff.models.interpolation.masked_condition), read beside the noisy latents.
        replace_known: also overwrite the known frames of the sample with their own latents noised to the current
        step before every U-Net call (the replacement method of Ho et al. 2022, "Video Diffusion Models", sec. 3.1),
        so the temporal layers carry them to the unknown frames, and return them clean.
        first_step: skip the first steps of the schedule; `latents` are then the sample at that step (SDEdit, Meng
        et al. 2022: a guess noised part-way is refined rather than drawn from nothing).
        callback_on_step_end(pipe, step, t, tensors) after each step, as in diffusers: `tensors` holds the names in
        `callback_on_step_end_tensor_inputs`, and the dict it returns replaces them (e.g. new `latents`)."""
        # 1. Check inputs
        sample_size = self.unet.unet.config.sample_size
        height = sample_size * self.vae_scale_factor if height is None else height
        width = sample_size * self.vae_scale_factor if width is None else width
        image, video, num_frames = self.check_media(image, video, latents, condition, strength, num_frames, height,
                                                    width)
        self.check_inputs(num_frames, height, width, num_inference_steps, output_type)
        prompts = [prompt] if isinstance(prompt, (str, dict)) else list(prompt)
        device = self._execution_device
        guided = guidance_scale > 1.0

        # 2. Encode prompts; negatives first, as StableDiffusionPipeline concatenates them (one text per frame for a
        # prompt dict)
        text = self.encode_prompts(prompts, negative_prompt, device, num_videos_per_prompt, guided, num_frames)

        # 3. Timesteps; a restyle starts part of the way down
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if video is not None:
            first_step = restyle.first_step(num_inference_steps, strength)

        # 4. Starting sample (b, c, f, h, w): noise (rescheduled for FreeNoise windows), or the noised video
        shape = (len(prompts) * num_videos_per_prompt, self.vae.config.latent_channels, num_frames,
                 height // self.vae_scale_factor, width // self.vae_scale_factor)
        if video is not None:
            latents = restyle.video_latents(self, video, shape[0], self.scheduler.timesteps[first_step], generator,
                                            decode_chunk_size)
        else:
            latents = self.prepare_latents(shape, generator, device, latents)
        step_kwargs = self._step_kwargs(generator, eta)

        # 5. The masked-frame condition, if the U-Net reads one; an image is frame 0 of it, or of the sample
        image_known = None
        if image is not None and self.unet.unet.config.in_channels > shape[1]:
            condition, replace_known = animate.image_condition(self, image, shape, decode_chunk_size), True
        elif image is not None:
            image_known = animate.image_known(self, image, shape, generator, decode_chunk_size)
        condition, known = self.prepare_condition(condition, shape, replace_known, guided, generator, device)
        known = image_known or known

        # 6. Denoising loop: conditional and unconditional halves as one batch
        timesteps = self.scheduler.timesteps[first_step:]
        self.use_conv_layout(device)
        for step, t in enumerate(self.progress_bar(timesteps) if show_progress else timesteps):
            if known is not None:
                known_latents, known_noise, mask = known
                latents = torch.where(mask, self.scheduler.add_noise(known_latents, known_noise, t.reshape(1)),
                                      latents)
            if image_known is None:
                noise = self.predict_noise(latents, t, text, condition, guidance_scale if guided else None)
            else:
                noise = animate.reconstruction_guided(self, latents, t, text, guidance_scale if guided else None,
                                                      image_known, reconstruction_guidance)
            latents = self.scheduler.step(noise, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                available = {"latents": latents, "noise_pred": noise, "prompt_embeds": text}
                tensors = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                latents = callback_on_step_end(self, step, t, tensors).get("latents", latents)
        if known is not None:
            latents = torch.where(known[2], known[0], latents)

        # 7. Decode (to uint8 chunk by chunk: a long clip's float frames need not exist all at once); an image
        # comes back as frame 0 as it came in
        if output_type == "latent":
            frames = latents
        elif output_type == "np":
            frames = np.concatenate([to_uint8(self.decode_latents(chunk, decode_chunk_size))
                                     for chunk in latents.split(decode_chunk_size, dim=2)], axis=1)
            if image is not None:
                frames[:, 0] = image
        else:
            frames = self.decode_latents(latents, decode_chunk_size)
            if image is not None:
                frames[:, :, 0] = torch.from_numpy(image).to(frames).permute(2, 0, 1) / 255
        self.maybe_free_model_hooks()
        return TextToVideoOutput(frames=frames)

    def check_media(self, image, video, latents, condition, strength, num_frames, height, width):
        """(image as uint8 (h, w, 3) or None, video as uint8 (f, h, w, 3) or None, the clip length), checked."""
        if image is not None and video is not None:
            raise VidiffInputError("give an image (image to video) or a video (video to video), not both")
        if image is not None:
            if condition is not None:
                raise VidiffInputError("give an image or a masked-frame condition, not both")
            image = animate.image_array(image)
            animate.check_size(image, height, width, "image")
        if video is not None:
            if latents is not None:
                raise VidiffInputError("give a video or starting latents, not both")
            restyle.check_strength(strength)
            video = animate.video_array(video)
            animate.check_size(video, height, width, "video")
            if num_frames not in (None, len(video)):
                raise VidiffInputError(f"num_frames={num_frames} but the video has {len(video)} frames; leave num_frames out")
            num_frames = len(video)
        return image, video, 16 if num_frames is None else num_frames

    def encode_prompts(self, prompts: list, negative_prompt, device, per_prompt: int, guided: bool,
                       num_frames: int = 1) -> torch.Tensor:
        """Text embeddings for a batch, each repeated `per_prompt` times. Guided: the negatives first (a string, one per
        prompt in a list, or None for ""), as StableDiffusionPipeline concatenates them. Where any prompt is a dict
        {frame: prompt}, one text per frame: (clips * num_frames, tokens, d), clip by clip."""
        negatives = None
        if guided:
            negatives = ([negative_prompt or ""] * len(prompts) if not isinstance(negative_prompt, list)
                         else negative_prompt)
            if len(negatives) != len(prompts):
                raise VidiffInputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts; give one per "
                                       "prompt")
        texts = [*(negatives or []), *prompts]
        if any(isinstance(text, dict) for text in texts):
            return torch.cat([encode_travel(self, text, num_frames, device).repeat(per_prompt, 1, 1) for text in texts])
        return self.encode_prompt(prompts, negatives, device).repeat_interleave(per_prompt, dim=0)

    def prepare_latents(self, shape: tuple[int, ...], generator, device, latents: torch.Tensor | None):
        """The starting sample: noise drawn from `generator`, or the given latents, scaled by the scheduler."""
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
            latents = self.reschedule_noise(latents, generator)  # FreeNoise: later windows reuse the first's noise
        elif tuple(latents.shape) != shape:
            raise VidiffInputError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        return latents.to(device=device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma

    def prepare_condition(self, condition, shape, replace_known: bool, guided: bool, generator, device):
        """(condition for the U-Net, doubled when guided; (known latents, their noise, mask) with replace_known)."""
        extra = self.unet.unet.config.in_channels - shape[1]
        if (condition is None) != (extra == 0) or (condition is not None and condition.shape[1] != extra):
            raise ValueError(f"the U-Net reads {extra} condition channels beside the latents but the condition has "
                             f"{None if condition is None else condition.shape[1]}; a masked-frame model samples "
                             "through vidiff.pipelines.interpolate")
        if condition is None:
            return None, None
        condition = condition.to(device=device, dtype=self.unet.dtype)
        known = None
        if replace_known:
            known_latents, mask = condition[:, :-1], condition[:, -1:].bool()
            known_noise = randn_tensor(known_latents.shape, generator=generator, device=device,
                                       dtype=known_latents.dtype)
            known = (known_latents, known_noise, mask)
        return (torch.cat([condition] * 2) if guided else condition), known

    def predict_noise(self, latents, t, text, condition, guidance_scale: float | None) -> torch.Tensor:
        """One U-Net call; with a guidance scale, the unconditional and conditional halves as one batch."""
        model_input = torch.cat([latents] * 2) if guidance_scale is not None else latents
        model_input = self.scheduler.scale_model_input(model_input, t)
        if condition is not None:
            model_input = torch.cat([model_input, condition], dim=1)
        noise = self.unet(model_input, t, text).sample
        if guidance_scale is not None:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance_scale * (cond - uncond)
        return noise

    def _step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {"eta": eta} if "eta" in accepted else {}
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs


def set_conv_layout(unet: VideoUNet, device: torch.device, layout: str = "auto") -> None:
    """Put the video U-Net's spatial weights in the convolution layout measured faster on `device`; a no-op once
    made. Sampling and training both call it.

    Channels-last made the U-Net step 0.93x on the 2-core CPU (oneDNN) but 1.06x on an H200 in bf16, where the
    GroupNorms copy it back to contiguous (BENCHMARKS.md); so "auto" is channels-last on the CPU only.
    """
    if layout == "auto":
        layout = "channels_last" if device.type == "cpu" else "contiguous"
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    spatial = getattr(unet, "_orig_mod", unet).unet  # through torch.compile's wrapper
    if not spatial.conv_in.weight.is_contiguous(memory_format=memory_format):
        spatial.to(memory_format=memory_format)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Frames in [0, 1], `b c f h w` -> uint8 `(b, f, h, w, c)`, rounded as diffusers' image processor does."""
    return (rearrange(video, "b c f h w -> b f h w c").cpu().float().numpy() * 255).round().astype(np.uint8)


def check_tokenizer(tokenizer, text_encoder) -> None:
    """Catch a tokenizer loaded from a missing or broken folder: transformers may return one with 2 tokens."""
    size = len(tokenizer)
    if size <= 2:
        raise VidiffInputError(f"the tokenizer has only {size} tokens; its folder is missing or broken")
    if size > text_encoder.config.vocab_size:
        raise VidiffInputError(f"the tokenizer has {size} tokens but the text encoder only "
                               f"{text_encoder.config.vocab_size}")
