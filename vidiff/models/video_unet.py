"""VideoUNet: a diffusers `UNet2DConditionModel`, untouched, plus temporal layers between its spatial layers.

Layout (Make-A-Video sec. 3.2; AnimateDiff's motion-module placement):
- after every spatial ResNet block: a `TemporalConv` (pseudo-3-D convolution);
- after every spatial layer of the down, mid and up blocks (the ResNet, or the ResNet + transformer pair where
  the block has attention): a `TemporalAttention` motion module.

Spatial layers see frames in the batch, `(b f) c h w`; temporal layers fold them out again. At the public
boundary latents are `b c f h w`. The 2-D U-Net lives in `self.unet` with its own parameter names, so
`video_unet.unet` is the exact image model and saves as a diffusers `UNet2DConditionModel`. The temporal layers
sit in `down_blocks.N` / `mid_block` / `up_blocks.N` containers whose `motion_modules` carry the names of a
diffusers `MotionAdapter`.

With one frame the temporal layers are skipped, so a 1-frame video is exactly the image model.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import (CrossAttnDownBlock2D, CrossAttnUpBlock2D, DownBlock2D,
                                                   UNetMidBlock2DCrossAttn, UpBlock2D)
from diffusers.utils import BaseOutput
from einops import rearrange
from safetensors import safe_open
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidiff.errors import VidiffInputError
from vidiff.models.attention import SharedTextAttnProcessor, cross_attentions
from vidiff.models.free_noise import FrameContext
from vidiff.models.temporal import TemporalAttention, TemporalConv, temporal_named_parameters
from vidiff.weights import read_weights, save_safetensors

SUPPORTED_BLOCKS = (DownBlock2D, CrossAttnDownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D)

# The options that decide the temporal layers; recorded in the model config and in temporal weight files.
TEMPORAL_OPTIONS = (
    "max_frames",
    "temporal_conv",
    "temporal_attention",
    "temporal_conv_kernel_size",
    "temporal_num_attention_heads",
    "temporal_num_layers",
    "temporal_norm_num_groups",
    "motion_mid_block",
)
TEMPORAL_WEIGHTS_FORMAT = "vidiff.temporal.v1"


@dataclass
class VideoUNetOutput(BaseOutput):
    sample: torch.Tensor  # (b, c, f, h, w)


class TemporalBlock(nn.Module):
    """The temporal layers of one U-Net block: one conv per ResNet, one motion module per layer."""

    def __init__(self, convs: list[TemporalConv], motion_modules: list[TemporalAttention]):
        super().__init__()
        self.temporal_convs = nn.ModuleList(convs)
        self.motion_modules = nn.ModuleList(motion_modules)


class VideoUNet(ModelMixin, AttentionMixin, ConfigMixin, PeftAdapterMixin):
    """A text-to-image U-Net inflated with temporal layers: `(b, c, f, h, w)` in and out.

    As diffusers' `UNetMotionModel`, it takes peft adapters (`PeftAdapterMixin`: `load_lora_adapter`, `set_adapters`,
    `fuse_lora`, ...; files are read through `vidiff.models.lora`, which maps their names onto this model) and
    attention processors on every attention layer, spatial and temporal (`AttentionMixin.set_attn_processor`).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        spatial_config: dict[str, Any],
        max_frames: int = 32,  # longest clip; sets the frame position table, as AnimateDiff's max_seq_length
        temporal_conv: bool = True,  # pseudo-3-D conv after each ResNet (Make-A-Video)
        temporal_attention: bool = True,  # motion module after each spatial layer (AnimateDiff)
        temporal_conv_kernel_size: int = 3,
        temporal_num_attention_heads: int = 8,  # AnimateDiff uses 8 heads at every width
        temporal_num_layers: int = 1,  # transformer blocks per motion module
        temporal_norm_num_groups: int | None = None,  # None: the spatial U-Net's norm_num_groups
        motion_mid_block: bool = True,  # AnimateDiff v1 has no mid-block motion module; v2 and v3 do
    ):
        super().__init__()
        spatial_config = {k: v for k, v in spatial_config.items() if not k.startswith("_")}
        self.unet = UNet2DConditionModel.from_config(spatial_config)
        _check_supported(self.unet)
        groups = temporal_norm_num_groups or self.unet.config.norm_num_groups

        def temporal_block(block: nn.Module, with_motion: bool = True) -> TemporalBlock:
            widths = [resnet.out_channels for resnet in block.resnets]
            layers = widths[1:] if isinstance(block, UNetMidBlock2DCrossAttn) else widths  # mid: after each attn
            convs = [TemporalConv(c, temporal_conv_kernel_size) for c in widths] if temporal_conv else []
            motion = [
                TemporalAttention(c, temporal_num_attention_heads, temporal_num_layers, groups, max_frames)
                for c in layers
            ]
            return TemporalBlock(convs, motion if temporal_attention and with_motion else [])

        self.down_blocks = nn.ModuleList(temporal_block(b) for b in self.unet.down_blocks)
        self.mid_block = temporal_block(self.unet.mid_block, motion_mid_block) if self.unet.mid_block else None
        self.up_blocks = nn.ModuleList(temporal_block(b) for b in self.unet.up_blocks)
        self.gradient_checkpointing = False
        # Text is read once per clip, not once per frame (see vidiff.models.attention); a plain list, so the
        # layers are not registered twice.
        self._text_attentions = cross_attentions(self.unet)
        self._use_shared_text()
        self.frame_context: FrameContext | None = None  # set_frame_context: FreeNoise windows for long clips
        self.temporal_split_size: int | None = None  # set_split_inference: frames per chunk in the spatial layers

    # ------------------------------------------------------------------------------------------------ forward

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> VideoUNetOutput | tuple[torch.Tensor]:
        """Denoise a batch of clips.

        sample: (b, c, f, h, w) latents; timestep: scalar or (b,); encoder_hidden_states: (b, n, d), one text
        per clip, or (b f, n, d), one per frame (prompt travel); class_labels: (b,) for U-Nets with a class
        embedding (the x4 upscaler's noise level).
        """
        batch, _, num_frames, height, width = sample.shape
        self.check_num_frames(num_frames)
        if encoder_hidden_states.shape[0] not in (batch, batch * num_frames):
            raise ValueError(
                f"encoder_hidden_states has batch {encoder_hidden_states.shape[0]} but sample has {batch} clips of "
                f"{num_frames} frames; pass one text embedding per clip, or one per frame"
            )
        unet = self.unet
        f = num_frames

        # 1. Clip-level embeddings, copied to every frame: frames ride in the batch for the spatial layers
        emb = self._embed(sample[:, :, 0], timestep, class_labels, timestep_cond).repeat_interleave(f, dim=0)
        shared = all(isinstance(a.processor, SharedTextAttnProcessor) for a in self._text_attentions)
        per_clip = encoder_hidden_states.shape[0] == batch
        context = encoder_hidden_states if shared or not per_clip else encoder_hidden_states.repeat_interleave(f, 0)
        attn_kwargs = dict(encoder_hidden_states=context, cross_attention_kwargs=cross_attention_kwargs)

        # 2. Pre-process
        x = rearrange(sample, "b c f h w -> (b f) c h w")
        if unet.config.center_input_sample:
            x = 2 * x - 1.0
        x = unet.conv_in(x)

        # 3. Down: each layer is resnet -> temporal conv -> spatial attention -> motion module
        skips = (x,)
        for block, temporal in zip(unet.down_blocks, self.down_blocks):
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for j, (resnet, attn) in enumerate(zip(block.resnets, attentions)):
                x = self._resnet(resnet, _at(temporal.temporal_convs, j), x, emb, f)
                x = self._attention(attn, _at(temporal.motion_modules, j), x, f, attn_kwargs)
                skips += (x,)
            for downsampler in block.downsamplers or []:
                x = _over_frames(downsampler, x, self._frame_chunks(x.shape[0], f))
            if block.downsamplers:
                skips += (x,)

        # 4. Mid: resnet -> (attention -> motion module -> resnet) * n
        if unet.mid_block is not None:
            mid, temporal = unet.mid_block, self.mid_block
            x = self._resnet(mid.resnets[0], _at(temporal.temporal_convs, 0), x, emb, f)
            for j, (attn, resnet) in enumerate(zip(mid.attentions, mid.resnets[1:])):
                x = self._attention(attn, _at(temporal.motion_modules, j), x, f, attn_kwargs)
                x = self._resnet(resnet, _at(temporal.temporal_convs, j + 1), x, emb, f)

        # 5. Up: concatenate the matching skip, then the same layer as on the way down
        forward_upsample_size = any(s % 2**unet.num_upsamplers for s in (height, width))
        for i, (block, temporal) in enumerate(zip(unet.up_blocks, self.up_blocks)):
            block_skips, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            is_final = i == len(unet.up_blocks) - 1
            upsample_size = skips[-1].shape[2:] if forward_upsample_size and not is_final else None
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for j, (resnet, attn) in enumerate(zip(block.resnets, attentions)):
                x = torch.cat([x, block_skips[-1 - j]], dim=1)
                x = self._resnet(resnet, _at(temporal.temporal_convs, j), x, emb, f)
                x = self._attention(attn, _at(temporal.motion_modules, j), x, f, attn_kwargs)
            for upsampler in block.upsamplers or []:
                x = _over_frames(upsampler, x, self._frame_chunks(x.shape[0], f), upsample_size)

        # 6. Post-process
        if unet.conv_norm_out is not None:
            x = unet.conv_act(unet.conv_norm_out(x))
        x = unet.conv_out(x)
        x = rearrange(x, "(b f) c h w -> b c f h w", f=f)
        return VideoUNetOutput(sample=x) if return_dict else (x,)

    def _embed(self, sample2d, timestep, class_labels, timestep_cond) -> torch.Tensor:
        """Timestep (+ class) embedding per clip, as `UNet2DConditionModel.forward` computes it."""
        unet = self.unet
        emb = unet.time_embedding(unet.get_time_embed(sample=sample2d, timestep=timestep), timestep_cond)
        class_emb = unet.get_class_embed(sample=sample2d, class_labels=class_labels)
        if class_emb is not None:
            emb = torch.cat([emb, class_emb], dim=-1) if unet.config.class_embeddings_concat else emb + class_emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        return emb

    def _resnet(self, resnet, conv, x, emb, num_frames):
        chunks = self._frame_chunks(x.shape[0], num_frames)
        return self._run(_resnet_layer, resnet, conv if num_frames > 1 else None, num_frames, x, emb, chunks)

    def _attention(self, attn, motion, x, num_frames, attn_kwargs):
        if attn is None and (motion is None or num_frames == 1):
            return x
        layer = functools.partial(_attention_layer, chunks=self._frame_chunks(x.shape[0], num_frames), **attn_kwargs)
        return self._run(layer, attn, motion if num_frames > 1 else None, num_frames, x)

    def _frame_chunks(self, rows: int, num_frames: int) -> list[tuple[int, slice]] | None:
        """With split inference, (clip, rows of `(b f)`) chunks of at most `temporal_split_size` frames of one clip
        each, for the spatial layers; None: all rows at once."""
        size = self.temporal_split_size
        if size is None or rows <= size:
            return None
        return [(clip, slice(clip * num_frames + first, clip * num_frames + min(first + size, num_frames)))
                for clip in range(rows // num_frames) for first in range(0, num_frames, size)]

    def _run(self, layer, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None) -> None:
        # Checkpoint whole layers here; the spatial blocks' own flags would only checkpoint inside a checkpoint.
        self.gradient_checkpointing = enable

    # ----------------------------------------------------------------------------------- long clips (FreeNoise)

    def set_frame_context(self, context: FrameContext | None) -> None:
        """Read clips through sliding windows over frames in every temporal attention (vidiff.models.free_noise),
        so that clips of any length run; None: attention over the whole clip, up to max_frames."""
        if context is not None and context.length > self.config.max_frames:
            raise VidiffInputError(f"context_length {context.length} is more than this model's max_frames "
                                   f"{self.config.max_frames}; use windows of at most {self.config.max_frames} frames")
        self.frame_context = context
        for module in self.modules():
            if isinstance(module, TemporalAttention):
                module.frame_context = context

    def set_split_inference(self, spatial_split_size: int | None = 256, temporal_split_size: int | None = 16) -> None:
        """Bound activation memory on long clips, as diffusers' `enable_free_noise_split_inference`: the spatial
        layers (ResNets, spatial transformers, down- and upsamplers) run on at most `temporal_split_size` frames at
        a time, the motion modules on at most `spatial_split_size` positions at a time. The results are the same
        (each row is computed on its own either way); None turns a split off."""
        for name, size in (("spatial_split_size", spatial_split_size), ("temporal_split_size", temporal_split_size)):
            if size is not None and (not isinstance(size, int) or size < 1):
                raise VidiffInputError(f"{name}={size!r} must be a positive integer or None")
        self.temporal_split_size = temporal_split_size
        for module in self.modules():
            if isinstance(module, TemporalAttention):
                module.split_size = spatial_split_size

    def check_num_frames(self, num_frames: int) -> None:
        """Raise a `ValueError` naming both numbers if the clip length is out of range (with a frame context,
        any length runs)."""
        if self.frame_context is not None and num_frames >= 1:
            return
        if not 1 <= num_frames <= self.config.max_frames:
            raise VidiffInputError(
                f"num_frames={num_frames} is outside 1..{self.config.max_frames}, the range this model was built "
                f"for (max_frames={self.config.max_frames}); use fewer frames or a model with a larger max_frames"
            )

    # ------------------------------------------------------------------------------------ temporal weights

    def temporal_config(self) -> dict[str, Any]:
        """The options that built the temporal layers, plus the spatial layout they fit."""
        spatial = self.unet.config
        layout = {
            "block_out_channels": list(spatial.block_out_channels),
            "layers_per_block": spatial.layers_per_block,
            "down_block_types": list(spatial.down_block_types),
            "up_block_types": list(spatial.up_block_types),
        }
        return {**{k: self.config[k] for k in TEMPORAL_OPTIONS}, "spatial_layout": layout}

    def temporal_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: param.detach() for name, param in temporal_named_parameters(self)}

    def save_temporal_weights(self, path: str | os.PathLike) -> Path:
        """Write the temporal parameters alone as one safetensors file, with the settings that built them. Equal
        weights give equal bytes (sorted header), so a checksum confirms a reproduction."""
        tensors = {k: v.contiguous().cpu() for k, v in self.temporal_state_dict().items()}
        metadata = {"format": TEMPORAL_WEIGHTS_FORMAT, "config": json.dumps(self.temporal_config())}
        return save_safetensors(tensors, path, metadata)

    def load_temporal_weights(self, path: str | os.PathLike) -> None:
        """Load a file written by `save_temporal_weights`; every key must match, in name and shape."""
        config, tensors = read_temporal_weights(path)
        differences = {
            k: (v, config.get(k)) for k, v in self.temporal_config().items() if config.get(k) != v and k in config
        }
        if differences:
            detail = ", ".join(f"{k}: model {mine!r} vs file {theirs!r}" for k, (mine, theirs) in differences.items())
            raise VidiffInputError(f"{path} was made for other temporal settings: {detail}")
        params = dict(temporal_named_parameters(self))
        missing, unexpected = sorted(params.keys() - tensors.keys()), sorted(tensors.keys() - params.keys())
        if missing or unexpected:
            raise VidiffInputError(f"{path} does not fit this model: missing {missing[:4]}, unexpected "
                                   f"{unexpected[:4]}")
        with torch.no_grad():
            for name, param in params.items():
                if tensors[name].shape != param.shape:
                    raise VidiffInputError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, model has "
                                           f"{param.shape}")
                param.copy_(tensors[name])

    # ---------------------------------------------------------------------------------------- attention kernels

    def set_attention_kernel(self, kernel: str = "auto") -> str:
        """Pick the attention kernel: 'sdpa' (torch), 'xformers', or 'auto' (xformers only if installed and on CUDA).

        Returns the kernel chosen.
        """
        if kernel == "auto":
            kernel = "xformers" if self.device.type == "cuda" and _xformers_available() else "sdpa"
        if kernel == "xformers":
            if self.device.type != "cuda" or not _xformers_available():
                raise VidiffInputError("attention kernel 'xformers' needs the xformers package and a CUDA device")
            self.enable_xformers_memory_efficient_attention()
        elif kernel == "sdpa":
            self.disable_xformers_memory_efficient_attention()
            self._use_shared_text()
        else:
            raise VidiffInputError(f"unknown attention kernel {kernel!r}; choose 'auto', 'sdpa' or 'xformers'")
        return kernel


    def _use_shared_text(self) -> None:
        for attention in self._text_attentions:
            attention.set_processor(SharedTextAttnProcessor())


def _at(modules: nn.ModuleList, index: int) -> nn.Module | None:
    return modules[index] if len(modules) else None


def _resnet_layer(resnet, conv, num_frames, x, emb, chunks=None):
    x = resnet(x, emb) if chunks is None else torch.cat([resnet(x[rows], emb[rows]) for _, rows in chunks])
    return conv(x, num_frames) if conv is not None else x


def _attention_layer(attn, motion, num_frames, x, chunks=None, encoder_hidden_states=None, **attn_kwargs):
    if attn is not None and chunks is None:
        x = attn(x, return_dict=False, encoder_hidden_states=encoder_hidden_states, **attn_kwargs)[0]
    elif attn is not None:  # each chunk with its frames' texts, or its clip's one text
        per_frame = encoder_hidden_states.shape[0] == x.shape[0]
        x = torch.cat([attn(x[rows], return_dict=False, **attn_kwargs,
                            encoder_hidden_states=encoder_hidden_states[rows if per_frame else slice(clip, clip + 1)])[0]
                       for clip, rows in chunks])
    return motion(x, num_frames) if motion is not None else x


def _over_frames(layer, x, chunks, *args):
    """A layer that reads each row of `(b f) c h w` on its own, over the chunks of `_frame_chunks` (None: at once)."""
    return layer(x, *args) if chunks is None else torch.cat([layer(x[rows], *args) for _, rows in chunks])


def _check_supported(unet: UNet2DConditionModel) -> None:
    blocks = [*unet.down_blocks, *unet.up_blocks] + ([unet.mid_block] if unet.mid_block is not None else [])
    for block in blocks:
        if type(block) not in SUPPORTED_BLOCKS:
            names = ", ".join(b.__name__ for b in SUPPORTED_BLOCKS)
            raise VidiffInputError(f"cannot inflate a U-Net with {type(block).__name__}; supported blocks: {names}")
    for key in ("addition_embed_type", "encoder_hid_dim_type"):
        if unet.config.get(key) is not None:
            raise VidiffInputError(f"cannot inflate a U-Net with {key}={unet.config[key]!r} (SDXL-style conditioning)")


def _xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return True


def read_temporal_weights(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a temporal weights file: `(settings, tensors)`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"temporal weights file not found: {path}")
    metadata, tensors = read_weights(path, _read_safetensors)
    if metadata.get("format") != TEMPORAL_WEIGHTS_FORMAT:
        raise VidiffInputError(f"{path} is not a vidiff temporal weights file (format {metadata.get('format')!r})")
    return json.loads(metadata["config"]), tensors


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(path, framework="pt") as f:
        return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
