"""AnimateDiff motion modules in and out of a `VideoUNet`.

Sources:
- a diffusers `MotionAdapter` folder (config.json + safetensors): its keys are already vidiff's
  (`down_blocks.N.motion_modules.M.transformer_blocks.0.attn1.to_q.weight`, ...);
- an original AnimateDiff checkpoint (`.ckpt`, `.pt`, `.safetensors`) whose keys follow the original repository
  (`...motion_modules.M.temporal_transformer.transformer_blocks.0.attention_blocks.0...`, `norms.0`, `ff_norm`).
  The renaming follows diffusers' `scripts/convert_animatediff_motion_module_to_diffusers.py`.

The frame position tables (`pos_encoder.pe` / `pos_embed.pe`) are not weights and are skipped: vidiff builds
the same sinusoidal table itself. Every other key must be used and none may be missing.
Pickle files load with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from vidiff.atomic import atomic_dir
from vidiff.errors import VidiffInputError
from vidiff.models.inflate import inflate_unet
from vidiff.models.temporal import TemporalAttention, TemporalConv
from vidiff.models.video_unet import VideoUNet

# Original AnimateDiff name -> diffusers / vidiff name, applied in order.
ORIGINAL_TO_VIDIFF = (
    (".temporal_transformer.", "."),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
)
logger = logging.getLogger(__name__)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# AnimateDiff's released checkpoints may hold this entry beside the tensors; its loaders drop it unread
# (`state_dict.pop("animatediff_config", "")`, commit 0e9ad27 "add dummy key"). Its own saving code (train.py) never
# writes it: checkpoints are {"epoch": int, "global_step": int, "state_dict": tensors}, all of which
# `weights_only=True` reads. So no type is added to torch's safe globals: an entry that weights_only refuses (code,
# or any object) refuses the whole file.
ANIMATEDIFF_DUMMY = "animatediff_config"


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from `.safetensors`, or from a pickle checkpoint loaded with `weights_only=True` (never arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix not in PICKLE_SUFFIXES:
        raise VidiffInputError(f"{path}: unknown weights format {path.suffix!r}; use .safetensors or .ckpt/.pt/.bin")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).splitlines()[0][:160]
        raise VidiffInputError(f"refused to load {path}: it holds more than tensors, and only weights are loaded "
                               f"(weights_only=True): {reason}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if isinstance(state, dict):  # AnimateDiff's v3 files carry a dummy entry its loaders drop (see ANIMATEDIFF_DUMMY)
        state = {k: v for k, v in state.items() if k != ANIMATEDIFF_DUMMY}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VidiffInputError(f"{path} does not hold a state dict of tensors")
    return state


def read_motion_modules(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`(vidiff temporal options, tensors under vidiff names)` from a MotionAdapter folder or an AnimateDiff file."""
    path = Path(path)
    if path.is_dir():
        config_path = path / "config.json"
        weights = [p for p in (path / "diffusion_pytorch_model.safetensors", path / "diffusion_pytorch_model.bin")
                   if p.is_file()]
        if not config_path.is_file() or not weights:
            raise FileNotFoundError(f"{path} is not a MotionAdapter folder (needs config.json and its weights)")
        state = load_weights_file(weights[0])
        options = options_from_adapter_config(json.loads(config_path.read_text()))
    else:
        state = convert_original_keys(load_weights_file(path))
        options = options_from_tensors(state)
    state = {k: v for k, v in state.items() if not k.endswith(".pe")}
    if "conv_in.weight" in state:
        raise VidiffInputError(f"{path} carries its own conv_in (a SparseCtrl-style adapter), which vidiff does not "
                               "load")
    return options, state


def convert_original_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename original AnimateDiff keys to diffusers / vidiff keys; keys already in that form pass through."""
    converted = {}
    for key, value in state.items():
        for old, new in ORIGINAL_TO_VIDIFF:
            key = key.replace(old, new)
        converted[key.replace("pos_encoder.pe", "pos_embed.pe")] = value
    return converted


def options_from_adapter_config(config: dict[str, Any]) -> dict[str, Any]:
    """Map a diffusers `MotionAdapter` config onto `VideoUNet` temporal options."""
    layers, heads = config.get("motion_transformer_layers_per_block", 1), config.get("motion_num_attention_heads", 8)
    if not isinstance(layers, int) or not isinstance(heads, int):
        raise VidiffInputError("per-block lists for motion layers or heads are not supported; vidiff uses one value")
    return {
        "max_frames": config.get("motion_max_seq_length", 32),
        "temporal_num_attention_heads": heads,
        "temporal_num_layers": layers,
        "temporal_norm_num_groups": config.get("motion_norm_num_groups", 32),
        "motion_mid_block": config.get("use_motion_mid_block", True),
        "_adapter_layout": (list(config["block_out_channels"]), config.get("motion_layers_per_block", 2)),
    }


def options_from_tensors(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infer the layout of an original AnimateDiff state dict from its keys (heads: AnimateDiff's fixed 8)."""
    pe = next((v for k, v in state.items() if k.endswith("pos_embed.pe")), None)
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"down_blocks\.(\d+)\.motion_modules", k))})
    if not blocks:
        raise VidiffInputError("no down_blocks.N.motion_modules keys: this is not an AnimateDiff motion module file")
    widths = [state[f"down_blocks.{i}.motion_modules.0.proj_in.weight"].shape[1] for i in blocks]
    per_block = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"down_blocks\.0\.motion_modules\.(\d+)", k)))
    num_layers = 1 + max(int(m.group(1)) for k in state if (m := re.search(r"transformer_blocks\.(\d+)\.", k)))
    return {
        "max_frames": pe.shape[1] if pe is not None else 32,
        "temporal_num_attention_heads": 8,
        "temporal_num_layers": num_layers,
        "motion_mid_block": any(k.startswith("mid_block.") for k in state),
        "_adapter_layout": (widths, per_block),
    }


def check_layout(video: VideoUNet, layout: tuple[list[int], int], source: str) -> None:
    """The adapter's block widths and layers per block must be the U-Net's."""
    widths, per_block = layout
    unet_widths = list(video.unet.config.block_out_channels)
    unet_layers = video.unet.config.layers_per_block
    if list(widths) != unet_widths or per_block != unet_layers:
        raise VidiffInputError(f"{source} was made for block widths {list(widths)} with {per_block} layers per block, "
                               f"but the U-Net has widths {unet_widths} with {unet_layers} layers per block")


def load_motion_modules(video: VideoUNet, state: dict[str, torch.Tensor], source: str = "motion modules") -> None:
    """Copy motion-module weights into `video`'s temporal attention; every key used, none missing."""
    params = motion_module_parameters(video)
    missing, unexpected = sorted(params.keys() - state.keys()), sorted(state.keys() - params.keys())
    if missing or unexpected:
        raise VidiffInputError(f"{source} does not fit this U-Net: {len(missing)} missing (e.g. {missing[:3]}), "
                               f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    with torch.no_grad():
        for name, param in params.items():
            if state[name].shape != param.shape:
                raise VidiffInputError(f"{source}: {name} has shape {tuple(state[name].shape)}, the U-Net needs "
                                       f"{tuple(param.shape)}")
            param.copy_(state[name])


def inflate_with_motion_adapter(unet2d, path: str | os.PathLike, **options: Any) -> VideoUNet:
    """Inflate `unet2d` with the settings of an AnimateDiff motion module and load its weights.

    Temporal convolutions (absent from AnimateDiff) stay at identity unless `temporal_conv=False` is passed.
    """
    adapter_options, state = read_motion_modules(path)
    layout = adapter_options.pop("_adapter_layout")
    video = inflate_unet(unet2d, **{**adapter_options, **options})
    check_layout(video, layout, str(path))
    load_motion_modules(video, state, str(path))
    return video


def export_motion_adapter(video: VideoUNet, folder: str | os.PathLike, overwrite: bool = False,
                          include_temporal_conv: bool = True) -> Path:
    """Write `video`'s temporal attention as a diffusers `MotionAdapter` folder (AnimateDiffPipeline loads it).

    A MotionAdapter has no place for temporal convolutions (AnimateDiff has none), so AnimateDiffPipeline runs
    without them. Convs still at their identity init change nothing and are left out. Trained ones would be lost
    and the exported adapter would make other clips, so they raise `ValueError`, unless
    `include_temporal_conv=False` drops them knowingly (with a logged warning). To keep them, save the whole model
    (`save_pretrained`) or its temporal weights (`save_temporal_weights`), which vidiff loads.
    """
    from diffusers import MotionAdapter

    config = video.config
    if not config.temporal_attention:
        raise VidiffInputError("this model has no temporal attention to export")
    trained_convs = trained_temporal_convs(video)
    if trained_convs and include_temporal_conv:
        raise VidiffInputError(f"this model has {len(trained_convs)} trained temporal convolutions (e.g. "
                               f"{trained_convs[0]}), which a MotionAdapter cannot hold: AnimateDiffPipeline would "
                               "run without them and make other clips; pass include_temporal_conv=False to export "
                               "without them knowingly, or share the whole model or its save_temporal_weights file")
    if trained_convs:
        logger.warning("exporting without %d trained temporal convolutions (include_temporal_conv=False): "
                       "AnimateDiffPipeline runs the motion modules alone", len(trained_convs))
    adapter = MotionAdapter(
        block_out_channels=tuple(video.unet.config.block_out_channels),
        motion_layers_per_block=video.unet.config.layers_per_block,
        motion_transformer_layers_per_block=config.temporal_num_layers,
        motion_transformer_layers_per_mid_block=config.temporal_num_layers,
        motion_num_attention_heads=config.temporal_num_attention_heads,
        motion_norm_num_groups=config.temporal_norm_num_groups or video.unet.config.norm_num_groups,
        motion_max_seq_length=config.max_frames,
        use_motion_mid_block=config.motion_mid_block,
    )
    ours = {name: p.detach() for name, p in motion_module_parameters(video).items()}
    theirs = {k for k in adapter.state_dict() if not k.endswith(".pe")}
    if theirs != ours.keys():
        raise VidiffInputError(f"cannot express this model as a MotionAdapter: keys differ, e.g. "
                               f"{sorted(theirs ^ ours.keys())[:3]}")
    adapter.load_state_dict({**adapter.state_dict(), **ours}, strict=True)
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        adapter.save_pretrained(tmp)
    return Path(folder)


def trained_temporal_convs(video: VideoUNet) -> list[str]:
    """Names of the temporal convolutions that are no longer the identity they start as (dirac kernel, zero bias)."""
    trained = []
    for name, module in video.named_modules():
        if isinstance(module, TemporalConv):
            identity = torch.nn.init.dirac_(torch.empty_like(module.conv.weight))
            if not (torch.equal(module.conv.weight, identity) and not module.conv.bias.any()):
                trained.append(name)
    return trained


def motion_module_parameters(video: VideoUNet) -> dict[str, torch.nn.Parameter]:
    """The temporal attention parameters, found by module type, under their MotionAdapter names."""
    return {
        f"{module_name}.{name}": param
        for module_name, module in video.named_modules()
        if isinstance(module, TemporalAttention)
        for name, param in module.named_parameters()
    }
