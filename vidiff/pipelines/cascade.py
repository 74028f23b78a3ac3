"""A cascade: the base video model, then frame interpolation, then super-resolution (DESIGN.md, "The cascade").

A cascade folder is a base video model folder (it loads as one, so `--model` takes it anywhere) with a
`cascade.json` beside its `model_index.json` naming the later stages and their default settings:

    {"interpolation": {"path": "interpolation", "factor": 4},
     "upscale": {"path": "upscale", "scale": 2}}

A stage folder holds at least `unet/`. Any other component it holds (`vae/`, `scheduler/`, ...) replaces the
base's; the rest are shared, loaded once. Stage U-Nets may be stored in fp16 (half the bytes in the package) and are
cast to the run's dtype on load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

CASCADE_FILE = "cascade.json"
STAGE_SETTING = {"interpolation": "factor", "upscale": "scale"}  # each stage's one number, and its name


@dataclass(frozen=True)
class Stage:
    name: str  # "interpolation" or "upscale"
    path: Path  # the stage folder, holding unet/ and any component that replaces the base's
    default: int  # factor (interpolation) or scale (upscale) used when the user gives none


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
            stages[name] = Stage(name, folder / entry["path"], int(entry[STAGE_SETTING[name]]))
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid cascade file ({error}); expected e.g. "
                         '{"interpolation": {"path": "interpolation", "factor": 4}}') from None
    for stage in stages.values():
        if not (stage.path / "unet" / "config.json").is_file():
            raise ValueError(f"{path} names stage folder {stage.path}, which has no unet/config.json")
    return stages


def stage_unet_config(stage: Stage) -> dict:
    return json.loads((stage.path / "unet" / "config.json").read_text())


def load_stage(base_pipe, stage: Stage, dtype: torch.dtype | None = None):
    """A pipeline for `stage` that shares every component of `base_pipe` the stage folder does not replace."""
    from diffusers import AutoencoderKL

    from vidiff.models.video_unet import VideoUNet

    dtype = dtype or base_pipe.unet.dtype
    components = dict(base_pipe.components)
    components["unet"] = VideoUNet.from_pretrained(stage.path / "unet", torch_dtype=dtype)
    if (stage.path / "vae").is_dir():
        components["vae"] = AutoencoderKL.from_pretrained(stage.path / "vae", torch_dtype=dtype)
    scheduler = type(base_pipe.scheduler)  # its own instance: a scheduler keeps state between calls
    components["scheduler"] = (scheduler.from_pretrained(stage.path / "scheduler")
                               if (stage.path / "scheduler").is_dir() else scheduler.from_config(base_pipe.scheduler.config))
    pipe = type(base_pipe)(**components)
    return pipe.to(base_pipe.device)


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


def load_interpolation(model: str | os.PathLike, device: torch.device, dtype: torch.dtype, base_pipe=None):
    """A pipeline for `vidiff.pipelines.interpolate.interpolate`, from a cascade or a masked-frame model folder.
    A `base_pipe` already loaded from `model` lends its components."""
    from vidiff.models.video_unet import VideoUNet
    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    stage = interpolation_stage(model)
    if stage.path == Path(model):
        return TextToVideoPipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    if base_pipe is not None:
        return load_stage(base_pipe, stage, dtype)
    unet = VideoUNet.from_pretrained(stage.path / "unet", torch_dtype=dtype)  # the base U-Net is never loaded
    return TextToVideoPipeline.from_pretrained(model, unet=unet, torch_dtype=dtype).to(device)
