"""`vidiff inflate`: a Stable Diffusion model folder (or single file) in, a complete video model folder out."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from diffusers import UNet2DConditionModel

from vidiff.atomic import atomic_dir, check_destination
from vidiff.errors import VidiffInputError
from vidiff.model_folder import (COMPONENTS, EXTRA_COMPONENTS, check_model_folder, component_classes, component_config,
                                 is_model_folder, library_of, read_index, write_model_index)
from vidiff.models.inflate import check_temporal_options, inflate_unet
from vidiff.models.motion_adapter import inflate_with_motion_adapter
from vidiff.models.video_unet import VideoUNet
from vidiff.weights import check_weights, loading


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
    check_destination(out, overwrite, replaceable=is_model_folder)
    check_temporal_options(options, (1,))  # counts now; the widths once the U-Net's config is read
    if base.is_file():
        return _inflate_single_file(base, out, config, overwrite, motion_adapter, **options)
    check_model_folder(base, COMPONENTS + ("unet",))
    unet_config = component_config(base, "unet")
    if unet_config.get("_class_name") == "VideoUNet":
        raise VidiffInputError(f"{base} is a video model already (its unet is a VideoUNet); inflate the Stable "
                               "Diffusion folder it was made from")
    check_temporal_options(options, unet_config.get("block_out_channels", ()))
    check_weights(base)  # the components are copied as they are: a broken file must not reach the video model

    with loading(base / "unet"):
        unet2d = UNet2DConditionModel.from_pretrained(base / "unet")
    video = _inflate(unet2d, motion_adapter, options)
    with atomic_dir(out, overwrite=overwrite, replaceable=is_model_folder) as tmp:
        video.save_pretrained(tmp / "unet")
        for name in (*COMPONENTS, *EXTRA_COMPONENTS):
            if name in COMPONENTS or (base / name).is_dir():
                shutil.copytree(base / name, tmp / name)
        write_model_index(tmp, component_classes(base), extra_from=read_index(base))
    return out


def _inflate(unet2d: UNet2DConditionModel, motion_adapter, options: dict[str, Any]) -> VideoUNet:
    if motion_adapter is None:
        return inflate_unet(unet2d, **options)
    return inflate_with_motion_adapter(unet2d, motion_adapter, **options)


def _inflate_single_file(path: Path, out: Path, config, overwrite: bool, motion_adapter, **options: Any) -> Path:
    if path.suffix != ".safetensors":
        raise VidiffInputError(f"{path}: single-file checkpoints must be .safetensors (got {path.suffix!r})")
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=None if config is None else str(config), local_files_only=True
        )
    except Exception as error:  # diffusers raises many types here; all mean "cannot convert offline"
        raise VidiffInputError(
            f"could not convert {path} offline ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            "pass --config with a local diffusers folder of the same model type"
        ) from error
    video = _inflate(pipe.unet, motion_adapter, options)
    with atomic_dir(out, overwrite=overwrite, replaceable=is_model_folder) as tmp:
        video.save_pretrained(tmp / "unet")
        for name in COMPONENTS:
            getattr(pipe, name).save_pretrained(tmp / name)
        classes = {name: library_of(getattr(pipe, name)) for name in COMPONENTS}
        write_model_index(tmp, classes)
    return out
