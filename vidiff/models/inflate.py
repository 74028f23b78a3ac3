"""Inflate a 2-D text-to-image U-Net into a `VideoUNet` with a strict weight copy."""

from __future__ import annotations

import os
from typing import Any

from diffusers import UNet2DConditionModel
from torch import nn

from vidiff.errors import VidiffInputError
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
        raise VidiffInputError(f"unknown inflation options {unknown}; known: {', '.join(TEMPORAL_OPTIONS)}")
    if temporal_weights is not None:
        recorded, _ = read_temporal_weights(temporal_weights)
        options = {**{k: recorded[k] for k in TEMPORAL_OPTIONS if k in recorded}, **options}
    check_temporal_options(options, unet2d.config.block_out_channels)

    spatial_config = {k: v for k, v in unet2d.config.items() if not k.startswith("_")}  # drops _name_or_path
    video = VideoUNet(spatial_config=spatial_config, **options)
    video.unet.load_state_dict(unet2d.state_dict(), strict=True)
    _assert_only_temporal_new(video, unet2d)
    # nn.Module.to: diffusers' ModelMixin.to warns about an empty fp32-module list on every dtype cast
    nn.Module.to(video, device=unet2d.device, dtype=unet2d.dtype)
    if temporal_weights is not None:
        video.load_temporal_weights(temporal_weights)
    return video


def check_temporal_options(options: dict[str, Any], widths: list[int] | tuple[int, ...]) -> None:
    """Refuse temporal settings that would build an unusable model: counts below 1, or heads and norm groups that
    do not divide every block width."""
    for key in ("max_frames", "temporal_conv_kernel_size", "temporal_num_attention_heads", "temporal_num_layers",
                "temporal_norm_num_groups"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise VidiffInputError(f"{key}={value!r} must be a whole number of at least 1")
    for key in ("temporal_num_attention_heads", "temporal_norm_num_groups"):
        value = options.get(key)
        if value is not None and any(width % value for width in widths):
            raise VidiffInputError(f"{key}={value} must divide every block width of this U-Net {list(widths)}")


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
