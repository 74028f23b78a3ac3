"""A cascade: the base video model, then frame interpolation, then super-resolution (DESIGN.md, "The cascade").

A cascade folder is a base video model folder (it loads as one, so `--model` takes it anywhere) with a
`cascade.json` beside its `model_index.json` naming the later stages and their default settings:

    {"interpolation": {"path": "interpolation", "factor": 4, "sampling": {"init": "blend", "strength": 0.4}},
     "upscale": {"path": "upscale", "scale": 2}}

`sampling` (optional) holds keyword arguments the stage samples best with; the CLI uses them unless told otherwise.

A stage folder holds at least `unet/`. Any other component it holds (`vae/`, `scheduler/`, ...) replaces the
base's, loaded as the class its own `model_index.json` names (else the base's); the rest are shared, loaded once.
Stage U-Nets may be stored in fp16 (half the bytes in the package) and are cast to the run's dtype on load.
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidiff.errors import VidiffInputError
from vidiff.model_folder import (DEFAULT_GUIDANCE, MODEL_INDEX, component_class, component_config, read_index,
                                 read_json, recommended_guidance, vae_scale_factor)

CASCADE_FILE = "cascade.json"
STAGE_SETTING = {"interpolation": "factor", "upscale": "scale"}  # each stage's one number, and its name
# How an image is animated: "guided", the base model under reconstruction guidance; "masked", the interpolation stage
IMAGE_METHODS = ("guided", "masked")


@dataclass(frozen=True)
class Stage:
    name: str  # "interpolation" or "upscale"
    path: Path  # the stage folder, holding unet/ and any component that replaces the base's
    default: int  # factor (interpolation) or scale (upscale) used when the user gives none
    sampling: dict = field(default_factory=dict)  # settings the stage samples best with (keyword arguments)


def read_cascade(folder: str | os.PathLike) -> dict[str, Stage]:
    """The stages a model folder names in cascade.json ({} for a plain video model)."""
    folder = Path(folder)
    path = folder / CASCADE_FILE
    if not path.is_file():
        return {}
    try:
        entries = read_json(path)
        stages = {}
        for name, entry in entries.items():
            if name not in STAGE_SETTING:
                raise VidiffInputError(f"unknown stage {name!r}")
            stages[name] = Stage(name, folder / entry["path"], int(entry[STAGE_SETTING[name]]),
                                 dict(entry.get("sampling", {})))
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise VidiffInputError(f"{path} is not a valid cascade file ({error}); expected e.g. "
                               '{"interpolation": {"path": "interpolation", "factor": 4}}') from None
    for stage in stages.values():
        if not (stage.path / "unet" / "config.json").is_file():
            raise VidiffInputError(f"{path} names stage folder {stage.path}, which has no unet/config.json")
    return stages


def load_stage(model: Path, stage: Stage, pipeline_class, device: torch.device, dtype: torch.dtype, base_pipe=None):
    """A `pipeline_class` for a cascade stage: its own U-Net, plus each component its folder holds, else the base
    model's: the modules of `base_pipe` when one is loaded (shared, not copied), else read from `model` (the base
    U-Net is never loaded). Schedulers are never shared: they keep state between calls."""
    from vidiff.models.video_unet import VideoUNet
    from vidiff.weights import loading

    shared = dict(base_pipe.components) if base_pipe is not None else {}
    with loading(stage.path, model):  # a weights file that will not load: one line naming it
        components = {"unet": VideoUNet.from_pretrained(stage.path / "unet", torch_dtype=dtype)}
        for name in ("vae", "text_encoder", "tokenizer", "scheduler"):
            own = (stage.path / name).is_dir()
            if not own and name in shared:
                components[name] = (shared[name] if name != "scheduler"
                                    else type(shared[name]).from_config(shared[name].config))
                continue
            kwargs = {"torch_dtype": dtype} if name in ("vae", "text_encoder") else {}
            # a component of the stage's own may be of another class than the base's (an upscaler's pixel codec)
            index_dir = stage.path if own and (stage.path / MODEL_INDEX).is_file() else model
            components[name] = component_class(index_dir, name).from_pretrained((stage.path if own else model) / name,
                                                                                **kwargs)
    if "low_res_scheduler" in inspect.signature(pipeline_class.__init__).parameters:
        from diffusers import DDPMScheduler

        from vidiff.pipelines.upscale import default_low_res_scheduler, pipeline_settings

        low_res = stage.path / "low_res_scheduler"
        components["low_res_scheduler"] = (DDPMScheduler.from_pretrained(low_res) if low_res.is_dir()
                                           else default_low_res_scheduler())
        components.update(pipeline_settings(read_index(stage.path)))
    return pipeline_class(**components).to(device)


def interpolation_stage(model: str | os.PathLike) -> Stage:
    """The interpolation stage of `model`: the one its cascade.json names, or the folder itself when it is a masked-
    frame model (trained with `task: interpolate`). Checks configs only; loads no weights."""
    model = Path(model)
    stage = read_cascade(model).get("interpolation") or Stage("interpolation", model, 0)
    unet = component_config(stage.path, "unet") if (stage.path / "unet" / "config.json").is_file() else {}
    vae = model / "vae" / "config.json"
    latent = read_json(vae, default={}).get("latent_channels", 4)
    in_channels = unet.get("spatial_config", {}).get("in_channels")
    if in_channels != 2 * latent + 1:
        raise VidiffInputError(f"{model} has no interpolation stage: no cascade.json names one, and its own U-Net "
                               f"reads {in_channels} channels, not {2 * latent + 1}; train one with `vidiff train "
                               "... task=interpolate`")
    return stage


def interpolation_settings(model: str | os.PathLike, steps: int | None = None, init: str | None = None,
                           strength: float | None = None) -> dict:
    """Keyword arguments for `interpolate`: the given steps / init / strength, else the stage's cascade.json
    recommendation, else 10 steps from pure noise."""
    sampling = dict(interpolation_stage(model).sampling)
    sampling.update({key: value for key, value in (("steps", steps), ("init", init), ("strength", strength))
                     if value is not None})
    return _stage_sampling("interpolation", sampling)


def load_interpolation(model: str | os.PathLike, device: torch.device, dtype: torch.dtype, base_pipe=None):
    """A pipeline for `vidiff.pipelines.interpolate.interpolate`, from a cascade or a masked-frame model folder.
    A `base_pipe` already loaded from `model` lends its components."""
    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    stage = interpolation_stage(model)
    if stage.path == Path(model):
        return TextToVideoPipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    return load_stage(Path(model), stage, TextToVideoPipeline, device, dtype, base_pipe)


def upscale_stage(model: str | os.PathLike) -> Stage:
    """The super-resolution stage of `model`: the one its cascade.json names, or the folder itself when it is an
    upscaler (a U-Net reading latents + low-res frames). Checks configs only; loads no weights."""
    from vidiff.pipelines.upscale import lowres_fold

    model = Path(model)
    stage = read_cascade(model).get("upscale") or Stage("upscale", model, 0)
    unet = component_config(stage.path, "unet") if (stage.path / "unet" / "config.json").is_file() else {}
    vae_dir = stage.path / "vae" if (stage.path / "vae").is_dir() else model / "vae"
    latent = read_json(vae_dir / "config.json", default={}).get("latent_channels", 4)
    try:
        lowres_fold(unet.get("spatial_config", {}).get("in_channels", 0), latent)
    except ValueError:
        raise VidiffInputError(f"{model} has no upscale stage: no cascade.json names one, and its own U-Net is not "
                               "an upscaler; inflate a Stable Diffusion x4 upscaler folder with `vidiff inflate`, or "
                               "train one with `vidiff train ... task=upscale`") from None
    return stage


def upscale_settings(model: str | os.PathLike, steps: int | None = None, noise_level: int | None = None) -> dict:
    """Keyword arguments for `upscale`: the given steps / noise level, else the stage's cascade.json recommendation,
    else 25 steps at noise level 20 (Stable Diffusion's upscaler)."""
    sampling = dict(upscale_stage(model).sampling)
    sampling.update({key: value for key, value in (("steps", steps), ("noise_level", noise_level)) if value is not None})
    return _stage_sampling("upscale", sampling)


def load_upscaler(model: str | os.PathLike, device: torch.device, dtype: torch.dtype, base_pipe=None):
    """An UpscalePipeline from a cascade's upscale stage (the base lends what the stage folder lacks; a
    `base_pipe` already loaded lends its modules) or from an upscaler model folder."""
    from vidiff.pipelines.upscale import UpscalePipeline

    stage = upscale_stage(model)
    if stage.path == Path(model):
        return UpscalePipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    return load_stage(Path(model), stage, UpscalePipeline, device, dtype, base_pipe)


def upscaler_geometry(model: str | os.PathLike) -> tuple[int, int]:
    """(scale, fold) of `model`'s upscale stage from its configs alone: the VAE's factor over the low-res fold r;
    input frame sides must be multiples of r."""
    from vidiff.pipelines.upscale import lowres_fold

    model = Path(model)
    stage = upscale_stage(model)
    vae_dir = stage.path / "vae" if (stage.path / "vae").is_dir() else model / "vae"
    vae = read_json(vae_dir / "config.json")
    fold = lowres_fold(component_config(stage.path, "unet")["spatial_config"]["in_channels"],
                       vae.get("latent_channels", 4))
    return vae_scale_factor(vae) // fold, fold


@dataclass
class VideoCascadeOutput:
    """frames: uint8 (batch, f, h, w, c) for output_type "np", float (batch, c, f, h, w) in [0, 1] for "pt".
    metadata: one dict per clip, what the sidecar records of each stage (settings, seed, seconds)."""

    frames: np.ndarray | torch.Tensor
    metadata: list[dict]


class VideoCascadePipeline:
    """The base video model, then frame interpolation, then super-resolution, as a folder's cascade.json says.

    Like diffusers' DeepFloyd IF stages or Stable Cascade: each stage is a pipeline of its own (`pipe.base`,
    `pipe.interpolation`, `pipe.upscale`, named in `pipe.stages`), usable alone, and this object chains them. The stages
    share the base's text encoder, tokenizer and VAE unless their folder holds their own, and never its scheduler.
    """

    def __init__(self, base, interpolation=None, upscale=None, settings: dict[str, Stage] | None = None,
                 guidance_scale: float = DEFAULT_GUIDANCE):
        self.base = base
        self.interpolation = interpolation
        self.upscale = upscale
        self.settings = settings or {}  # stage name -> Stage: its default factor or scale, and sampling settings
        self.guidance_scale = guidance_scale  # the base's recommended guidance (sampling.json)
        self.show_progress = True

    @property
    def stages(self) -> list[str]:
        return ["base", *(name for name in ("interpolation", "upscale") if getattr(self, name) is not None)]

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, torch_dtype: torch.dtype | None = None,
                        stages: tuple[str, ...] = ("interpolation", "upscale")) -> VideoCascadePipeline:
        """Load a cascade folder (or a plain video model folder, which is a cascade of one stage). `stages` limits
        the later stages that are loaded; a stage left out cannot run."""
        from vidiff.pipelines.text_to_video import TextToVideoPipeline
        from vidiff.pipelines.upscale import UpscalePipeline

        folder = Path(folder)
        settings = read_cascade(folder)
        base = TextToVideoPipeline.from_pretrained(folder, torch_dtype=torch_dtype)
        device, dtype = base.device, base.unet.dtype
        loaded = {}
        for name, pipeline_class in (("interpolation", TextToVideoPipeline), ("upscale", UpscalePipeline)):
            if name in settings and name in stages:
                loaded[name] = load_stage(folder, settings[name], pipeline_class, device, dtype, base_pipe=base)
        return cls(base, **loaded, settings=settings, guidance_scale=recommended_guidance(folder))

    def to(self, *args, **kwargs) -> VideoCascadePipeline:
        for name in self.stages:
            getattr(self, name).to(*args, **kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return self.base.device

    def set_progress_bar_config(self, **kwargs) -> None:
        self.show_progress = not kwargs.get("disable", False)
        for name in self.stages:
            getattr(self, name).set_progress_bar_config(**kwargs)

    def enable_free_noise(self, **options) -> None:
        """Long clips: FreeNoise windows (`TextToVideoPipeline.enable_free_noise`, the same options) on the stages
        that sample the first frames: the base, and the interpolation stage, which animates an image. Interpolation
        and upscaling of long clips already run in windows of their own."""
        for pipe in (self.base, self.interpolation):
            if pipe is not None:
                pipe.enable_free_noise(**options)

    def disable_free_noise(self) -> None:
        for pipe in (self.base, self.interpolation):
            if pipe is not None:
                pipe.disable_free_noise()

    def enable_free_noise_split_inference(self, **options) -> None:
        for pipe in (self.base, self.interpolation):
            if pipe is not None:
                pipe.enable_free_noise_split_inference(**options)

    def stage_settings(self, interpolate: int | None = None, upscale: int | None = None,
                       interpolate_steps: int | None = None, upscale_steps: int | None = None) -> dict[str, dict]:
        """The later stages a call runs, each with its settings: a factor or scale of None takes the loaded stage's
        cascade.json default (1 for a stage not loaded), 1 turns it off. Checks them without sampling."""
        chosen = {}
        for name, value, steps in (("interpolation", interpolate, interpolate_steps),
                                   ("upscale", upscale, upscale_steps)):
            stage = self.settings.get(name)
            if value is None:
                value = stage.default if stage is not None and getattr(self, name) is not None else 1
            if not isinstance(value, int) or value < 1:
                raise VidiffInputError(f"{name} {STAGE_SETTING[name]} {value!r} must be an integer of at least 1 (1: "
                                       "off)")
            if value == 1:
                continue
            if getattr(self, name) is None:
                raise VidiffInputError(f"this cascade has no {name} stage loaded; pass {STAGE_SETTING[name]} 1")
            sampling = dict(stage.sampling) if stage is not None else {}
            if steps is not None:
                sampling["steps"] = steps
            chosen[name] = {STAGE_SETTING[name]: value, **_stage_sampling(name, sampling)}
        if "upscale" in chosen:
            from vidiff.pipelines.upscale import upscale_passes

            upscale_passes(chosen["upscale"]["scale"], self.upscale.scale)
        return chosen

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | dict[int, str],
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float | None = None,
        interpolate: int | None = None,
        upscale: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "np",
        callback_on_step_end=None,
        fps: float = 8,
        interpolate_steps: int | None = None,
        upscale_steps: int | None = None,
        image=None,
        video=None,
        strength: float = 0.6,
        image_method: str = "guided",
    ) -> VideoCascadeOutput:
        """Sample clips with the base model, then run the later stages on each. `guidance_scale` None: the model's
        recommendation (sampling.json); `interpolate` / `upscale` None: cascade.json's factor and scale, 1: off.
        The later stages draw their noise from the seed of the clip's generator (`generator.initial_seed()`), so a
        clip is reproduced by its seed alone, as `vidiff generate --seed` records it.
        `prompt` may be a dict {frame: prompt} (prompt travel). `image`: the first frame, which the base model
        continues under reconstruction guidance (image_method "guided"), or the interpolation stage, a masked-frame
        model, reading it as its known frame ("masked"); docs/long-clips.md measures both. `video` and `strength`:
        the base model restyles the video (num_frames: its length). Either way the later stages then run as for
        text."""
        # 1. Check inputs
        if output_type not in ("np", "pt"):
            raise VidiffInputError(f"output_type {output_type!r}: a cascade returns 'np' (uint8) or 'pt' frames")
        stages = self.stage_settings(interpolate, upscale, interpolate_steps, upscale_steps)
        if video is not None and num_frames is None:
            num_frames = len(video)
        num_frames = 16 if num_frames is None else num_frames
        if "interpolation" in stages and num_frames < 2:
            raise VidiffInputError("interpolation needs at least 2 frames per clip; raise num_frames or pass "
                                   "interpolate=1")
        if image is not None and image_method not in IMAGE_METHODS:
            raise VidiffInputError(f"unknown image_method {image_method!r}; choose one of "
                                   f"{', '.join(IMAGE_METHODS)}")
        if image is not None and image_method == "masked" and self.interpolation is None:
            raise VidiffInputError("image_method 'masked' animates with the cascade's interpolation stage (a "
                                   "masked-frame model), which is not loaded; use image_method 'guided'")
        prompts = [prompt] if isinstance(prompt, (str, dict)) else list(prompt)
        generators = generator if isinstance(generator, list) else [generator] * len(prompts)
        if len(generators) != len(prompts):
            raise VidiffInputError(f"{len(generators)} generators for {len(prompts)} prompts; give one per prompt")
        generators = [g if g is not None else torch.Generator().manual_seed(int(torch.seed() % 2**31))
                      for g in generators]
        seeds = [g.initial_seed() for g in generators]
        guidance = self.guidance_scale if guidance_scale is None else guidance_scale

        # 2. The first frames: the base model from text or from a video, or the masked-frame model from an image
        start = time.perf_counter()
        first = self.interpolation if image is not None and image_method == "masked" else self.base
        media = {"image": image} if image is not None else {"video": video, "strength": strength} if video is not None \
            else {}
        clips = first(prompts, negative_prompt=negative_prompt, num_frames=num_frames, height=height, width=width,
                      num_inference_steps=num_inference_steps, guidance_scale=guidance,
                      generator=generators if len(generators) > 1 else generators[0],
                      callback_on_step_end=callback_on_step_end, show_progress=self.show_progress, **media).frames
        base_s = time.perf_counter() - start

        # 3. The later stages, clip by clip
        frames, metadata = [], []
        for clip, text, seed in zip(clips, prompts, seeds):
            meta = {"seed": seed, "guidance": guidance, "steps": num_inference_steps,
                    "base": {"frames": len(clip), "fps": fps, "size": [int(clip.shape[2]), int(clip.shape[1])],
                             "seconds": round(base_s / len(prompts), 3),
                             **self._first_frames_meta(first, image, video, strength, image_method)}}
            clip = self.run_stages(clip, text, seed, stages, meta)
            frames.append(clip)
            metadata.append(meta)

        # 4. Output
        frames = np.stack(frames)
        if output_type == "pt":
            frames = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float().div(255)
        return VideoCascadeOutput(frames=frames, metadata=metadata)

    @staticmethod
    def _first_frames_meta(first, image, video, strength, image_method) -> dict:
        """What the sidecar records of how the first frames were made: the input, and FreeNoise's windows."""
        meta = {"from": "image", "image_method": image_method} if image is not None else \
            {"from": "video", "strength": strength} if video is not None else {}
        context = first.free_noise_context
        if context is not None:
            meta["context"] = {"length": context.length, "stride": context.stride, "weighting": context.weighting}
        return meta

    def run_stages(self, clip: np.ndarray, prompt: str | dict[int, str], seed: int, stages: dict[str, dict],
                   meta: dict) -> np.ndarray:
        """One clip's uint8 frames (f, h, w, c) through the chosen later stages; each stage's settings and seconds go
        into `meta`."""
        from vidiff.pipelines.interpolate import interpolate as interpolate_frames
        from vidiff.pipelines.upscale import upscale as upscale_frames

        if "interpolation" in stages:
            start, settings = time.perf_counter(), dict(stages["interpolation"])
            factor = settings.pop("factor")
            clip = interpolate_frames(self.interpolation, clip, factor, prompt=prompt, seed=seed,
                                      show_progress=self.show_progress, **settings)
            meta["interpolation"] = {**stages["interpolation"], "seconds": round(time.perf_counter() - start, 3)}
        if "upscale" in stages:
            start, settings = time.perf_counter(), dict(stages["upscale"])
            scale = settings.pop("scale")
            clip = upscale_frames(self.upscale, clip, scale, seed=seed, show_progress=self.show_progress, **settings)
            meta["upscale"] = {**stages["upscale"], "seconds": round(time.perf_counter() - start, 3)}
        return clip


def _stage_sampling(name: str, sampling: dict) -> dict:
    """A stage's cascade.json sampling settings as the keyword arguments of its function, checked."""
    steps = sampling.get("steps", 10 if name == "interpolation" else 25)
    if not isinstance(steps, int) or steps < 1:
        raise VidiffInputError(f"{name} steps {steps!r} must be an integer of at least 1")
    if name == "interpolation":
        init, strength = sampling.get("init", "noise"), sampling.get("strength", 1.0)
        if init not in ("noise", "blend", "nearest") or not 0 < strength <= 1:
            raise VidiffInputError(f"init {init!r} must be noise, blend or nearest, and strength {strength} within (0, "
                                   "1]")
        return {"num_inference_steps": steps, "init": init, "strength": strength}
    from vidiff.pipelines.upscale import DEFAULT_NOISE_LEVEL

    return {"num_inference_steps": steps, "noise_level": sampling.get("noise_level", DEFAULT_NOISE_LEVEL)}
