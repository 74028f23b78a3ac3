"""Inflate a 2-D text-to-image U-Net into a `VideoUNet` with a strict weight copy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from diffusers import UNet2DConditionModel
from torch import nn

from vidiff.atomic import atomic_dir, write_text
from vidiff.models.temporal import temporal_named_parameters
from vidiff.models.video_unet import TEMPORAL_OPTIONS, VideoUNet, read_temporal_weights


def inflate_unet(
    unet2d: UNet2DConditionModel, temporal_weights: str | os.PathLike | None = None, **options: Any
) -> VideoUNet:
    """Return a `VideoUNet` whose spatial weights are a copy of `unet2d`'s and whose temporal layers start at identity.

    options: the `VideoUNet` temporal settings (`max_frames`, `temporal_num_attention_heads`, ...).
    temporal_weights: a file from `VideoUNet.save_temporal_weights`; its recorded settings build the layers and its
    weights fill them.
    """
    unknown = sorted(set(options) - set(TEMPORAL_OPTIONS))
    if unknown:
        raise ValueError(f"unknown inflation options {unknown}; known: {', '.join(TEMPORAL_OPTIONS)}")
    if temporal_weights is not None:
        recorded, _ = read_temporal_weights(temporal_weights)
        options = {**{k: recorded[k] for k in TEMPORAL_OPTIONS if k in recorded}, **options}

    spatial_config = {k: v for k, v in unet2d.config.items() if not k.startswith("_")}  # drops _name_or_path
    video = VideoUNet(spatial_config=spatial_config, **options)
    video.unet.load_state_dict(unet2d.state_dict(), strict=True)
    _assert_only_temporal_new(video, unet2d)
    # nn.Module.to: diffusers' ModelMixin.to warns about an empty fp32-module list on every dtype cast
    nn.Module.to(video, device=unet2d.device, dtype=unet2d.dtype)
    if temporal_weights is not None:
        video.load_temporal_weights(temporal_weights)
    return video


def _assert_only_temporal_new(video: VideoUNet, unet2d: UNet2DConditionModel) -> None:
    """The parameters the 2-D U-Net did not supply must be exactly the temporal ones."""
    copied = {f"unet.{name}" for name, _ in unet2d.named_parameters()}
    new = {name for name, _ in video.named_parameters()} - copied
    temporal = {name for name, _ in temporal_named_parameters(video)}
    if new != temporal:
        raise AssertionError(
            f"inflation left non-temporal parameters uninitialised: {sorted(new - temporal)[:5]}; "
            f"or temporal ones shadowed: {sorted(temporal - new)[:5]}"
        )


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


def inflate_model_folder(
    base: str | os.PathLike,
    out: str | os.PathLike,
    config: str | os.PathLike | None = None,
    overwrite: bool = False,
    motion_adapter: str | os.PathLike | None = None,
    **options: Any,
) -> Path:
    """Turn a Stable Diffusion model (diffusers folder, or single-file `.safetensors`) into a video model folder.

    The folder gets `unet/` (a `VideoUNet`), the base's `vae/ text_encoder/ tokenizer/ scheduler/`, and a
    `model_index.json`. It is built beside `out` and renamed into place, so a failure leaves nothing behind.
    config: for a single file, a local diffusers folder with the matching configs (conversion runs offline).
    motion_adapter: AnimateDiff motion modules (MotionAdapter folder or original checkpoint) to load; their
    settings build the temporal attention unless `options` say otherwise.
    """
    base, out = Path(base), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"output folder {out} already exists; pass --overwrite or choose another path")
    if base.is_file():
        return _inflate_single_file(base, out, config, overwrite, motion_adapter, **options)
    check_model_folder(base, COMPONENTS + ("unet",))

    video = _inflate(UNet2DConditionModel.from_pretrained(base / "unet"), motion_adapter, options)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        video.save_pretrained(tmp / "unet")
        for name in (*COMPONENTS, *EXTRA_COMPONENTS):
            if name in COMPONENTS or (base / name).is_dir():
                shutil.copytree(base / name, tmp / name)
        index_path = base / "model_index.json"
        write_model_index(tmp, component_classes(base),
                          extra_from=json.loads(index_path.read_text()) if index_path.is_file() else None)
    return out


def _inflate(unet2d: UNet2DConditionModel, motion_adapter, options: dict[str, Any]) -> VideoUNet:
    if motion_adapter is None:
        return inflate_unet(unet2d, **options)
    from vidiff.models.motion_adapter import inflate_with_motion_adapter

    return inflate_with_motion_adapter(unet2d, motion_adapter, **options)


def _inflate_single_file(path: Path, out: Path, config, overwrite: bool, motion_adapter, **options: Any) -> Path:
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: single-file checkpoints must be .safetensors (got {path.suffix!r})")
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=None if config is None else str(config), local_files_only=True
        )
    except Exception as error:  # diffusers raises many types here; all mean "cannot convert offline"
        raise ValueError(
            f"could not convert {path} offline ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            "pass --config with a local diffusers folder of the same model type"
        ) from error
    video = _inflate(pipe.unet, motion_adapter, options)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        video.save_pretrained(tmp / "unet")
        for name in COMPONENTS:
            getattr(pipe, name).save_pretrained(tmp / name)
        classes = {name: _library_of(getattr(pipe, name)) for name in COMPONENTS}
        write_model_index(tmp, classes)
    return out


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
    write_text(folder / "model_index.json", json.dumps(index, indent=2) + "\n")


def component_classes(base: Path) -> dict[str, list[str]]:
    """The classes of vae, text_encoder, tokenizer and scheduler named by `base`'s model_index.json, else the defaults."""
    index_path = base / "model_index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    return {name: list(index.get(name) or DEFAULT_CLASSES[name]) for name in COMPONENTS}


def _library_of(component: Any) -> list[str]:
    return [type(component).__module__.split(".")[0], type(component).__name__]
