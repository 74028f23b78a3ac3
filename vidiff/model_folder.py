"""Model folders: the one reader and writer of diffusers-layout folders and the small JSON files vidiff keeps in them.

A video model folder is a diffusers pipeline folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
`tokenizer/`, `scheduler/`) whose U-Net is a `VideoUNet`. It may also hold `sampling.json` (what the model samples
best with) and `cascade.json` (its later stages, read by `vidiff.pipelines.cascade`).

Everything here reads configs only, with no torch or diffusers import at module level, so the command line can check
its input against a model before any heavy import.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from vidiff.atomic import write_text
from vidiff.errors import VidiffInputError

MODEL_INDEX = "model_index.json"
# Components a Stable Diffusion folder must have for a complete video model, besides the U-Net.
COMPONENTS = ("vae", "text_encoder", "tokenizer", "scheduler")
# an upscaler (Stable Diffusion x4 upscaler layout) also has the DDPM schedule that noise-augments its low-res input
EXTRA_COMPONENTS = ("low_res_scheduler",)
DEFAULT_CLASSES = {
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "DDIMScheduler"],
}
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default-model"
SAMPLING_FILE = "sampling.json"  # optional, in a model folder: {"guidance": ...}, what that model samples best with
DEFAULT_GUIDANCE = 7.5  # Stable Diffusion's usual scale, for a folder that recommends none


def read_json(path: str | os.PathLike, default: dict | None = None) -> dict:
    """A JSON object from `path`; `default` (when given) for a missing file. A file that is not a JSON object is a
    `VidiffInputError` naming it."""
    path = Path(path)
    if default is not None and not path.is_file():
        return default
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise VidiffInputError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}); fix or replace "
                               "it") from None
    if not isinstance(value, dict):
        raise VidiffInputError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def read_index(folder: str | os.PathLike) -> dict:
    """The folder's model_index.json, or {} if it has none."""
    return read_json(Path(folder) / MODEL_INDEX, default={})


def component_config(folder: str | os.PathLike, name: str) -> dict:
    """`folder/name/config.json` (the U-Net's, the VAE's, ...)."""
    return read_json(Path(folder) / name / "config.json")


def component_classes(folder: str | os.PathLike) -> dict[str, list[str]]:
    """The [library, class] of vae, text_encoder, tokenizer and scheduler named by the folder's model_index.json,
    else the defaults."""
    index = read_index(folder)
    return {name: list(index.get(name) or DEFAULT_CLASSES[name]) for name in COMPONENTS}


def component_class(folder: str | os.PathLike, name: str) -> type:
    """The class that loads component `name` of `folder`, as its model_index.json names it (else the default)."""
    library, class_name = read_index(folder).get(name) or DEFAULT_CLASSES[name]
    return getattr(importlib.import_module(library), class_name)


def check_model_folder(folder: str | os.PathLike, components: tuple[str, ...]) -> None:
    """Raise `FileNotFoundError` naming the first missing part of a diffusers-layout model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    for name in components:
        if not (folder / name).is_dir():
            raise FileNotFoundError(f"{folder} has no {name}/ folder; expected a diffusers-layout model folder")
    if "unet" in components and not (folder / "unet" / "config.json").is_file():
        raise FileNotFoundError(f"{folder / 'unet'} has no config.json")


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder `--overwrite` may replace with a model folder: one holding a model_index.json (a
    model folder itself), or nothing."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and ((path / MODEL_INDEX).is_file() or not any(path.iterdir()))


def write_model_index(folder: Path, classes: dict[str, list[str]], extra_from: dict | None = None) -> None:
    """model_index.json of a video model; `extra_from` (the source's index) carries an upscaler's low-res
    scheduler, max_noise_level and residual flag over, and makes the folder an UpscalePipeline."""
    from vidiff import __version__

    index = {"_class_name": "TextToVideoPipeline", "_vidiff_version": __version__, "unet": ["vidiff", "VideoUNet"]}
    index.update({name: classes[name] for name in COMPONENTS})
    extra_from = extra_from or {}
    if all(extra_from.get(name) for name in EXTRA_COMPONENTS):
        index["_class_name"] = "UpscalePipeline"
        index.update({name: extra_from[name] for name in EXTRA_COMPONENTS})
        index["max_noise_level"] = extra_from.get("max_noise_level", 350)
        if extra_from.get("residual"):
            index["residual"] = True
    write_text(folder / MODEL_INDEX, json.dumps(index, indent=2) + "\n")


def library_of(component: Any) -> list[str]:
    """[library, class] of a loaded component, as model_index.json records it."""
    return [type(component).__module__.split(".")[0], type(component).__name__]


def vae_scale_factor(vae_config: dict) -> int:
    """How many pixels one latent position covers along each side: 2 per down block after the first."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def default_model() -> Path:
    """The tiny cascade that ships inside the package."""
    if not (DEFAULT_MODEL_DIR / MODEL_INDEX).is_file():
        raise FileNotFoundError(
            "this vidiff build ships no default model yet; build the stand-in with "
            "`python scripts/make_tiny_model.py tiny-video` and pass --model tiny-video"
        )
    return DEFAULT_MODEL_DIR


def recommended_guidance(model: str | os.PathLike) -> float:
    """The guidance scale the model folder recommends in sampling.json, else DEFAULT_GUIDANCE."""
    path = Path(model) / SAMPLING_FILE
    if not path.is_file():
        return DEFAULT_GUIDANCE
    try:
        return float(read_json(path).get("guidance", DEFAULT_GUIDANCE))
    except (TypeError, ValueError):
        raise VidiffInputError(f"{path} must be a JSON object like {{\"guidance\": 1.5}}; fix or delete it") from None


def check_frame_size(model: str | os.PathLike, **sizes: int | None) -> None:
    """Refuse frame sizes (height=..., width=..., resolution=...; None: the model's own) that the model's VAE cannot
    encode and decode: each must be a positive multiple of its downscale factor."""
    check_model_folder(model, ("vae",))
    scale = vae_scale_factor(component_config(model, "vae"))
    for name, value in sizes.items():
        if value is not None and (value <= 0 or value % scale):
            raise VidiffInputError(f"{name}={value} must be a positive multiple of {scale} for this model's VAE")


def check_video_model(model: str | os.PathLike, num_frames: int = 1, height: int | None = None,
                      width: int | None = None, steps: int = 1) -> dict:
    """Check a clip's settings against a video model folder's saved configs, loading no weights; returns the
    U-Net's config."""
    model = Path(model)
    check_model_folder(model, (*COMPONENTS, "unet"))
    unet = component_config(model, "unet")
    if unet.get("_class_name") != "VideoUNet":
        raise VidiffInputError(f"{model} is not a video model (unet is {unet.get('_class_name')}); run `vidiff "
                               "inflate`")
    if not 1 <= num_frames <= unet["max_frames"]:
        raise VidiffInputError(f"num_frames={num_frames} is outside 1..{unet['max_frames']} for {model}")
    check_frame_size(model, height=height, width=width)
    if steps < 1:
        raise VidiffInputError(f"steps={steps} must be at least 1")
    return unet
