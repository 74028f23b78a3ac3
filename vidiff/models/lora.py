"""LoRA weights onto a `VideoUNet` and its text encoder, with diffusers' names and meaning.

A LoRA file names layers as diffusers' `UNetMotionModel` does (what `AnimateDiffPipeline.save_lora_weights` writes
and `load_lora_weights` reads): `unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_A.weight`
for a motion module, `unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight` for the image
layers, `text_encoder....` for CLIP. A `VideoUNet` has the motion modules under the same names and keeps the image
U-Net whole under `unet.`, so one rule maps the names both ways (`to_vidiff_name`, `to_diffusers_name`).

Formats, each converted by the code that defines it:
- diffusers / peft files, including the older `...processor.to_q_lora.down.weight` keys: diffusers' converters;
- kohya / A1111 SD LoRAs (`lora_unet_...`, `lora_te_...`, `.alpha`): diffusers' `lora_state_dict`;
- the original AnimateDiff MotionLoRA (`v2_lora_ZoomIn.ckpt`): keys named after AnimateDiff's own modules,
  `down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor.to_q_lora
  .down.weight` with `.up.weight` beside it, possibly inside a `state_dict` wrapper. AnimateDiff merges each pair as
  W += alpha * up @ down (`load_diffusers_lora` in animatediff/utils/convert_lora_safetensor_to_diffusers.py), so
  its rank is its alpha: diffusers' reading of such keys with no alphas. The renaming is that of diffusers'
  `scripts/convert_animatediff_motion_lora_to_diffusers.py`.

`fit_unet_lora` and `fit_text_encoder_lora` check every key against the model, in name and shape, before anything
is loaded, so a file for another model is refused whole with one line naming what does not fit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from vidiff.atomic import atomic_path
from vidiff.errors import VidiffInputError
from vidiff.models.motion_adapter import ORIGINAL_TO_VIDIFF, PICKLE_SUFFIXES, load_weights_file

# The layouts a LoRA file may use, for messages about files that fit none of them.
EXPECTED_LAYOUT = (
    "diffusers names (unet.down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.lora_A.weight, "
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight, text_encoder....), "
    "kohya names (lora_unet_down_blocks_0_attentions_0_..._to_q.lora_down.weight) or AnimateDiff MotionLoRA names "
    "(down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor"
    ".to_q_lora.down.weight)"
)
LORA_METADATA_KEY = "lora_adapter_metadata"  # where diffusers' save_lora_weights records each LoraConfig
U_NET_BLOCKS = ("down_blocks.", "mid_block.", "up_blocks.")

# What `trainable: lora` puts LoRAs on (TrainConfig.lora_targets), as peft target patterns over VideoUNet names:
# the q, k, v and output projections of the motion modules' two frame attentions (a MotionLoRA), or of the image
# layers' self- and cross-attention, or both.
_PROJECTIONS = r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
LORA_TARGETS = {
    "temporal": rf".*\.motion_modules\.\d+\.{_PROJECTIONS}",
    "spatial": rf"unet\..*\.attentions\.\d+\.{_PROJECTIONS}",
}
LORA_TARGETS["both"] = f"({LORA_TARGETS['temporal']})|({LORA_TARGETS['spatial']})"


def read_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """`(tensors, diffusers' LoRA metadata or None)` from a `.safetensors` file, a folder holding one (as
    `save_lora_weights` writes), or a pickle loaded with `weights_only=True` (never code)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        preferred = [p for p in files if p.name == "pytorch_lora_weights.safetensors"]
        if not preferred and len(files) != 1:
            raise VidiffInputError(f"{path} holds {len(files)} .safetensors files; name the LoRA file itself")
        path = (preferred or files)[0]
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    if path.suffix in PICKLE_SUFFIXES:
        return load_weights_file(path), None
    if path.suffix != ".safetensors":
        raise VidiffInputError(f"{path}: unknown LoRA format {path.suffix!r}; use .safetensors or .ckpt/.pt/.bin")
    with safe_open(path, framework="pt") as f:
        raw = (f.metadata() or {}).get(LORA_METADATA_KEY)
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, json.loads(raw) if raw else None


def is_animatediff_motion_lora(state: dict[str, torch.Tensor]) -> bool:
    """Keys without a component prefix, naming U-Net blocks: AnimateDiff's MotionLoRA layout (or diffusers' older
    attention-processor layout, which the same renaming leaves as it is)."""
    return bool(state) and all(k.startswith(U_NET_BLOCKS) for k in state)


def from_animatediff(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AnimateDiff MotionLoRA keys -> diffusers keys (`unet.` + the motion module's diffusers name), as diffusers'
    conversion script renames them: `temporal_transformer.` dropped, `attention_blocks.0/1` -> `attn1/attn2`."""
    converted = {}
    for key, value in state.items():
        for old, new in ORIGINAL_TO_VIDIFF:
            key = key.replace(old, new)
        converted[f"unet.{key}"] = value
    return converted


def to_vidiff_name(name: str) -> str:
    """A `UNetMotionModel` module name -> the same module in a `VideoUNet` (motion modules keep their names, the
    image layers live under `unet.`). A leading `^` (a peft pattern anchored at the start) is kept."""
    anchor, name = ("^", name[1:]) if name.startswith("^") else ("", name)
    return anchor + (name if ".motion_modules." in name else f"unet.{name}")


def to_diffusers_name(name: str) -> str:
    """A `VideoUNet` module name -> the `UNetMotionModel` name diffusers' LoRA files use."""
    return name.removeprefix("unet.")


def fit_unet_lora(
    video: nn.Module,
    state: dict[str, torch.Tensor],
    network_alphas: dict[str, float] | None,
    metadata: dict[str, Any] | None,
    source: str,
) -> tuple[dict[str, torch.Tensor], dict[str, float] | None, dict[str, Any] | None]:
    """The `unet.` part of a diffusers-format LoRA, renamed onto `video` and checked: every layer it names exists
    and has the widths the LoRA was made for. Returns `(state, network_alphas, metadata)` in `VideoUNet` names,
    still prefixed `unet.`, for diffusers' `load_lora_into_unet`."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    peft_state = convert_unet_state_dict_to_peft({k[len("unet."):]: v for k, v in state.items()})
    modules = dict(video.named_modules())
    renamed, unmatched = {}, []
    for key, value in peft_state.items():
        module_name, _, parameter = key.partition(".lora_")
        target = to_vidiff_name(module_name)
        if target not in modules:
            unmatched.append(f"unet.{key}")
            continue
        _check_widths(modules[target], target, parameter, value, source)
        renamed[f"unet.{target}.lora_{parameter}"] = value
    if unmatched:
        raise VidiffInputError(f"{source}: {len(unmatched)} of its {len(peft_state)} U-Net LoRA keys name no layer of this "
                         f"model, e.g. {', '.join(sorted(unmatched)[:3])}; expected {EXPECTED_LAYOUT}")
    if network_alphas:
        network_alphas = {
            (f"unet.{to_vidiff_name(k[len('unet.'):])}" if k.startswith("unet.") else k): v
            for k, v in network_alphas.items()
        }
    if metadata:
        metadata = {k: _rename_config(v) if k.startswith("unet.") else v for k, v in metadata.items()}
    return renamed, network_alphas, metadata


def fit_text_encoder_lora(text_encoder: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Check the `text_encoder.` part of a LoRA against the text encoder, converted as diffusers converts it."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft

    try:
        peft_state = convert_state_dict_to_peft(convert_state_dict_to_diffusers(
            {k[len("text_encoder."):]: v for k, v in state.items()}))
    except ValueError:
        raise VidiffInputError(f"{source}: its text-encoder keys are in no LoRA layout diffusers reads, e.g. "
                         f"{', '.join(sorted(state)[:3])}; expected {EXPECTED_LAYOUT}") from None
    if not hasattr(text_encoder, "text_model"):  # transformers 5 flattened CLIPTextModel, as diffusers handles it
        peft_state = {k.removeprefix("text_model."): v for k, v in peft_state.items()}
    modules = dict(text_encoder.named_modules())
    unmatched = []
    for key, value in peft_state.items():
        module_name, _, parameter = key.partition(".lora_")
        if module_name not in modules:
            unmatched.append(f"text_encoder.{key}")
        else:
            _check_widths(modules[module_name], f"text_encoder.{module_name}", parameter, value, source)
    if unmatched:
        raise VidiffInputError(f"{source}: {len(unmatched)} of its {len(peft_state)} text-encoder LoRA keys name no layer "
                         f"of this text encoder, e.g. {', '.join(sorted(unmatched)[:3])}; expected {EXPECTED_LAYOUT}")


def _check_widths(module: nn.Module, name: str, parameter: str, value: torch.Tensor, source: str) -> None:
    """lora_A reads the layer's input width, lora_B writes its output width."""
    base = getattr(module, "base_layer", module)  # a layer that already carries another adapter
    if isinstance(base, nn.Linear):
        widths = (base.in_features, base.out_features)
    elif isinstance(base, nn.Conv2d):
        widths = (base.in_channels, base.out_channels)
    else:
        raise VidiffInputError(f"{source}: {name} is a {type(base).__name__}, which takes no LoRA here; LoRAs go on "
                         "linear and 2-D convolution layers")
    if parameter.startswith("A.") and value.shape[1] != widths[0]:
        raise VidiffInputError(f"{source}: the LoRA for {name} was made for other widths: its lora_A has shape "
                         f"{tuple(value.shape)} (input width {value.shape[1]}), the layer takes {widths[0]} -> "
                         f"{widths[1]}; use a LoRA made for this base model")
    if parameter.startswith("B.") and value.shape[0] != widths[1]:
        raise VidiffInputError(f"{source}: the LoRA for {name} was made for other widths: its lora_B has shape "
                         f"{tuple(value.shape)} (output width {value.shape[0]}), the layer takes {widths[0]} -> "
                         f"{widths[1]}; use a LoRA made for this base model")


def _rename_config(value: Any) -> Any:
    """Module names inside diffusers' recorded LoraConfig (target_modules, rank/alpha patterns) -> VideoUNet's.
    Names with dots are layer paths; bare names (`to_q`) and regular expressions match anywhere and stay."""
    if isinstance(value, dict):
        return {_rename_path(k): v for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_path(v) if isinstance(v, str) else v for v in value]
    return value


def _rename_path(name: str) -> str:
    bare = name.removeprefix("^")
    is_path = bare.startswith(U_NET_BLOCKS + ("conv_in", "conv_out", "time_embedding")) and "*" not in bare
    return to_vidiff_name(name) if is_path else name


# ------------------------------------------------------------------------------------------------------ training


def add_lora(video: nn.Module, rank: int = 8, alpha: float | None = None, targets: str = "temporal",
             adapter_name: str = "default", seed: int = 0) -> dict[str, nn.Parameter]:
    """Put a trainable peft LoRA on `targets` (a key of `LORA_TARGETS`) and return its parameters by name.

    peft's default init: lora_A random (drawn from a generator seeded by `seed`, so a resumed run starts alike),
    lora_B zero, so the model is unchanged at the start. Scale alpha / rank; alpha None means rank (scale 1.0).
    """
    from peft import LoraConfig

    if targets not in LORA_TARGETS:
        raise VidiffInputError(f"lora_targets={targets!r}; choose one of {', '.join(LORA_TARGETS)}")
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=LORA_TARGETS[targets])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        video.add_adapter(config, adapter_name=adapter_name)
    params = {n: p for n, p in video.named_parameters() if ".lora_" in n and f".{adapter_name}." in n}
    if not params:
        raise VidiffInputError(f"this model has no layers for lora_targets={targets!r} (no attention there)")
    return params


def save_lora(video: nn.Module, path: str | os.PathLike, adapter_name: str = "default") -> Path:
    """Write the adapter as a diffusers LoRA file (`unet.` + `UNetMotionModel` names, its LoraConfig as metadata),
    which vidiff's and diffusers' `AnimateDiffPipeline.load_lora_weights` both read. Written atomically."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(video, adapter_name=adapter_name)
    layers = {}
    for key, value in state.items():
        module_name, _, parameter = key.partition(".lora_")
        layers[f"{to_diffusers_name(module_name)}.lora_{parameter}"] = value.detach().contiguous().cpu()
    config = video.peft_config[adapter_name].to_dict()
    # the layers by name, so that the config means the same in UNetMotionModel (the patterns use VideoUNet names)
    config["target_modules"] = sorted({key.partition(".lora_")[0] for key in layers})
    path = Path(path)
    with atomic_path(path) as tmp:
        mode = tmp.stat().st_mode  # safetensors writes a new file, private; keep the permissions atomic_path chose
        StableDiffusionLoraLoaderMixin.save_lora_weights(tmp.parent, unet_lora_layers=layers, weight_name=tmp.name,
                                                         unet_lora_adapter_metadata=config)
        tmp.chmod(mode)
    return path
