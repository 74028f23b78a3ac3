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
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

CASCADE_FILE = "cascade.json"
STAGE_SETTING = {"interpolation": "factor", "upscale": "scale"}  # each stage's one number, and its name


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
        entries = json.loads(path.read_text())
        stages = {}
        for name, entry in entries.items():
            if name not in STAGE_SETTING:
                raise ValueError(f"unknown stage {name!r}")
            stages[name] = Stage(name, folder / entry["path"], int(entry[STAGE_SETTING[name]]),
                                 dict(entry.get("sampling", {})))
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid cascade file ({error}); expected e.g. "
                         '{"interpolation": {"path": "interpolation", "factor": 4}}') from None
    for stage in stages.values():
        if not (stage.path / "unet" / "config.json").is_file():
            raise ValueError(f"{path} names stage folder {stage.path}, which has no unet/config.json")
    return stages


def stage_unet_config(stage: Stage) -> dict:
    return json.loads((stage.path / "unet" / "config.json").read_text())


def load_stage(model: Path, stage: Stage, pipeline_class, device: torch.device, dtype: torch.dtype, base_pipe=None):
    """A `pipeline_class` for a cascade stage: its own U-Net, plus each component its folder holds, else the base
    model's: the modules of `base_pipe` when one is loaded (shared, not copied), else read from `model` (the base
    U-Net is never loaded). Schedulers are never shared: they keep state between calls."""
    from vidiff.models.video_unet import VideoUNet

    shared = dict(base_pipe.components) if base_pipe is not None else {}
    components = {"unet": VideoUNet.from_pretrained(stage.path / "unet", torch_dtype=dtype)}
    for name in ("vae", "text_encoder", "tokenizer", "scheduler"):
        own = (stage.path / name).is_dir()
        if not own and name in shared:
            components[name] = (shared[name] if name != "scheduler"
                                else type(shared[name]).from_config(shared[name].config))
            continue
        kwargs = {"torch_dtype": dtype} if name in ("vae", "text_encoder") else {}
        # a component of the stage's own may be of another class than the base's (an upscaler's pixel codec)
        index_dir = stage.path if own and (stage.path / "model_index.json").is_file() else model
        components[name] = _component_class(index_dir, name).from_pretrained((stage.path if own else model) / name,
                                                                             **kwargs)
    if "low_res_scheduler" in inspect.signature(pipeline_class.__init__).parameters:
        from diffusers import DDPMScheduler

        from vidiff.pipelines.upscale import default_low_res_scheduler, pipeline_settings

        low_res = stage.path / "low_res_scheduler"
        components["low_res_scheduler"] = (DDPMScheduler.from_pretrained(low_res) if low_res.is_dir()
                                           else default_low_res_scheduler())
        index_path = stage.path / "model_index.json"
        components.update(pipeline_settings(json.loads(index_path.read_text()) if index_path.is_file() else {}))
    return pipeline_class(**components).to(device)


def interpolation_stage(model: str | os.PathLike) -> Stage:
    """The interpolation stage of `model`: the one its cascade.json names, or the folder itself when it is a masked-
    frame model (trained with `task: interpolate`). Checks configs only; loads no weights."""
    model = Path(model)
    stage = read_cascade(model).get("interpolation") or Stage("interpolation", model, 0)
    unet = stage_unet_config(stage) if (stage.path / "unet" / "config.json").is_file() else {}
    vae = model / "vae" / "config.json"
    latent = json.loads(vae.read_text()).get("latent_channels", 4) if vae.is_file() else 4
    in_channels = unet.get("spatial_config", {}).get("in_channels")
    if in_channels != 2 * latent + 1:
        raise ValueError(f"{model} has no interpolation stage: no cascade.json names one, and its own U-Net reads "
                         f"{in_channels} channels, not {2 * latent + 1}; train one with `vidiff train ... "
                         "task=interpolate`")
    return stage


def interpolation_settings(model: str | os.PathLike, steps: int | None = None, init: str | None = None,
                           strength: float | None = None) -> dict:
    """Keyword arguments for `interpolate`: the given steps / init / strength, else the stage's cascade.json
    recommendation, else 10 steps from pure noise."""
    recommended = interpolation_stage(model).sampling
    steps = steps if steps is not None else recommended.get("steps", 10)
    init = init or recommended.get("init", "noise")
    strength = strength if strength is not None else recommended.get("strength", 1.0)
    if steps < 1:
        raise ValueError(f"interpolation steps {steps} must be at least 1")
    if init not in ("noise", "blend", "nearest") or not 0 < strength <= 1:
        raise ValueError(f"init {init!r} must be noise, blend or nearest, and strength {strength} within (0, 1]")
    return {"num_inference_steps": steps, "init": init, "strength": strength}


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
    unet = stage_unet_config(stage) if (stage.path / "unet" / "config.json").is_file() else {}
    vae_dir = stage.path / "vae" if (stage.path / "vae").is_dir() else model / "vae"
    latent = json.loads((vae_dir / "config.json").read_text()).get("latent_channels", 4) if vae_dir.is_dir() else 4
    try:
        lowres_fold(unet.get("spatial_config", {}).get("in_channels", 0), latent)
    except ValueError:
        raise ValueError(f"{model} has no upscale stage: no cascade.json names one, and its own U-Net is not an "
                         "upscaler; inflate a Stable Diffusion x4 upscaler folder with `vidiff inflate`, or train "
                         "one with `vidiff train ... task=upscale`") from None
    return stage


def upscale_settings(model: str | os.PathLike, steps: int | None = None, noise_level: int | None = None) -> dict:
    """Keyword arguments for `upscale`: the given steps / noise level, else the stage's cascade.json recommendation,
    else 25 steps at noise level 20 (Stable Diffusion's upscaler)."""
    from vidiff.pipelines.upscale import DEFAULT_NOISE_LEVEL

    recommended = upscale_stage(model).sampling
    steps = steps if steps is not None else recommended.get("steps", 25)
    noise_level = noise_level if noise_level is not None else recommended.get("noise_level", DEFAULT_NOISE_LEVEL)
    if steps < 1:
        raise ValueError(f"upscale steps {steps} must be at least 1")
    return {"num_inference_steps": steps, "noise_level": noise_level}


def load_upscaler(model: str | os.PathLike, device: torch.device, dtype: torch.dtype, base_pipe=None):
    """An UpscalePipeline from a cascade's upscale stage (the base lends what the stage folder lacks; a
    `base_pipe` already loaded lends its modules) or from an upscaler model folder."""
    from vidiff.pipelines.upscale import UpscalePipeline

    stage = upscale_stage(model)
    if stage.path == Path(model):
        return UpscalePipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    return load_stage(Path(model), stage, UpscalePipeline, device, dtype, base_pipe)


def _component_class(model: Path, name: str):
    import importlib

    from vidiff.models.inflate import DEFAULT_CLASSES

    index_path = model / "model_index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    library, class_name = index.get(name) or DEFAULT_CLASSES[name]
    return getattr(importlib.import_module(library), class_name)


def upscaler_geometry(model: str | os.PathLike) -> tuple[int, int]:
    """(scale, fold) of `model`'s upscale stage from its configs alone: the VAE's factor over the low-res fold r;
    input frame sides must be multiples of r."""
    from vidiff.pipelines.upscale import lowres_fold

    model = Path(model)
    stage = upscale_stage(model)
    vae_dir = stage.path / "vae" if (stage.path / "vae").is_dir() else model / "vae"
    vae = json.loads((vae_dir / "config.json").read_text())
    fold = lowres_fold(stage_unet_config(stage)["spatial_config"]["in_channels"], vae.get("latent_channels", 4))
    return 2 ** (len(vae["block_out_channels"]) - 1) // fold, fold
