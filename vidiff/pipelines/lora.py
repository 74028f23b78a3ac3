"""LoRA on a video pipeline, with diffusers' names and meaning: `load_lora_weights`, `set_adapters`, `fuse_lora`,
`unfuse_lora`, `unload_lora_weights`, `get_active_adapters` (diffusers' `StableDiffusionLoraLoaderMixin`, the loader
`AnimateDiffPipeline` uses). vidiff reads the file, converts AnimateDiff's MotionLoRA layout, checks every key against
the model before anything is loaded, then hands the weights to diffusers' own loading code.

For a command line: `parse_lora_spec("zoom.safetensors=0.8")`, `load_loras(pipe, specs)` and `lora_record`, the
`{path, sha256, scale}` a sidecar keeps.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders import StableDiffusionLoraLoaderMixin

from vidiff.errors import VidiffInputError
from vidiff.models.lora import (fit_text_encoder_lora, fit_unet_lora, from_animatediff, is_animatediff_motion_lora,
                                 read_lora_file)


class VideoLoraLoaderMixin(StableDiffusionLoraLoaderMixin):
    """`StableDiffusionLoraLoaderMixin` for a pipeline whose `unet` is a `VideoUNet`."""

    def load_lora_weights(
        self, pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        adapter_name: str | None = None, **kwargs: Any,
    ) -> None:
        """Load a LoRA into the U-Net (motion modules and image layers) and the text encoder, as `adapter_name`.

        Takes a diffusers / peft LoRA (a `.safetensors` file or the folder `save_lora_weights` writes), a kohya /
        A1111 SD LoRA, an original AnimateDiff MotionLoRA (`.ckpt`, read with `weights_only=True`), or a state dict.
        A file that does not fit this model raises `ValueError` and nothing is loaded. kwargs go to diffusers'
        `lora_state_dict` (e.g. `unet_config`).
        """
        # 1. Read: safetensors with the LoraConfig diffusers records in them, pickles weights-only (never code)
        source = "the LoRA state dict"
        if isinstance(pretrained_model_name_or_path_or_dict, dict):
            state, metadata = dict(pretrained_model_name_or_path_or_dict), None
        else:
            source = str(pretrained_model_name_or_path_or_dict)
            state, metadata = read_lora_file(pretrained_model_name_or_path_or_dict)
        if not state:
            raise VidiffInputError(f"{source} holds no tensors; expected a LoRA")

        # 2. Convert: AnimateDiff's MotionLoRA names to diffusers'; kohya / A1111 by diffusers' lora_state_dict
        if is_animatediff_motion_lora(state):
            state = from_animatediff(state)
        if not all("lora" in key for key in state):  # what diffusers checks, with the keys named
            strays = sorted(key for key in state if "lora" not in key)
            raise VidiffInputError(f"{source} is not a LoRA: {len(strays)} keys name no LoRA weight, e.g. "
                             f"{', '.join(strays[:3])}")
        state, network_alphas = self.lora_state_dict(state, **kwargs)

        # 3. Check every key against the U-Net and the text encoder before anything is injected
        unet_state = {k: v for k, v in state.items() if k.startswith(f"{self.unet_name}.")}
        text_state = {k: v for k, v in state.items() if k.startswith(f"{self.text_encoder_name}.")}
        strays = sorted(state.keys() - unet_state.keys() - text_state.keys())
        if strays:
            raise VidiffInputError(f"{source}: {len(strays)} LoRA keys are for no part of this pipeline (it has a unet "
                             f"and a text_encoder), e.g. {', '.join(strays[:3])}")
        unet = getattr(self.unet, "_orig_mod", self.unet)  # through torch.compile's wrapper
        unet_state, unet_alphas, unet_metadata = fit_unet_lora(unet, unet_state, network_alphas, metadata, source)
        if text_state:
            fit_text_encoder_lora(self.text_encoder, text_state, source)
        in_use = {name for names in self.get_list_adapters().values() for name in names}
        if adapter_name is None:  # one name for both parts
            adapter_name = next(f"default_{i}" for i in range(len(in_use) + 1) if f"default_{i}" not in in_use)
        elif adapter_name in in_use:
            raise VidiffInputError(f"adapter name {adapter_name!r} is already loaded; choose another, or unload it first")

        # 4. Load through diffusers (each part with its own recorded LoraConfig, if the file has one); if the text
        #    encoder's part fails, the U-Net's is taken out again
        if unet_state:
            self.load_lora_into_unet(unet_state, network_alphas=unet_alphas, unet=unet, adapter_name=adapter_name,
                                     metadata=_part(unet_metadata, self.unet_name), _pipeline=self)
        if text_state:
            try:
                self.load_lora_into_text_encoder(text_state, network_alphas=network_alphas,
                                                 text_encoder=self.text_encoder, lora_scale=self.lora_scale,
                                                 adapter_name=adapter_name,
                                                 metadata=_part(metadata, self.text_encoder_name), _pipeline=self)
            except Exception:
                if unet_state:
                    unet.delete_adapters(adapter_name)
                raise

    def set_adapters(self, adapter_names: str | list[str],
                     adapter_weights: float | dict | list[float | dict] | None = None) -> None:
        """Activate `adapter_names` with one weight each (None: 1.0), as diffusers' `set_adapters`; a weight may
        be a dict per component, `{"unet": 0.8, "text_encoder": 1.0}`. Per-block weights are not supported."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        weights = adapter_weights if isinstance(adapter_weights, list) else [adapter_weights] * len(names)
        for name, weight in zip(names, weights):
            parts = weight if isinstance(weight, dict) else {"": weight}
            for part, value in parts.items():
                if part and part not in self._lora_loadable_modules:
                    raise VidiffInputError(f"adapter weight for {name!r} names {part!r}; name unet or text_encoder")
                if value is not None:
                    check_scale(value, f"adapter weight for {name!r}{f' ({part})' if part else ''}")
        super().set_adapters(names, weights)


def _part(metadata: dict[str, Any] | None, prefix: str) -> dict[str, Any] | None:
    """The metadata entries of one component, or None if the file recorded none for it (diffusers would otherwise
    build a default LoraConfig from an empty dict)."""
    if not metadata or not any(key.startswith(f"{prefix}.") for key in metadata):
        return None
    return metadata


def check_scale(value: Any, what: str = "LoRA scale") -> float:
    """A LoRA scale must be a finite number (bool is not); returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise VidiffInputError(f"{what} {value!r} is not a finite number; give e.g. 0.8")
    return float(value)


def parse_lora_spec(spec: str) -> tuple[Path, float]:
    """`PATH[=SCALE]` -> `(path, scale)`; the scale defaults to 1.0. A path that itself holds `=` is taken whole
    when it exists. Raises `ValueError` for a scale that is not a number, `FileNotFoundError` for a missing path."""
    path, sep, scale = spec.rpartition("=")
    if not sep or Path(spec).exists():
        path, scale = spec, "1.0"
    try:
        value = float(scale)
    except ValueError:
        raise VidiffInputError(f"LoRA scale {scale!r} in {spec!r} is not a number; write PATH=SCALE, e.g. "
                         f"{path}=0.8") from None
    check_scale(value, f"LoRA scale in {spec!r}:")
    if not Path(path).exists():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    return Path(path), value


def lora_record(path: str | os.PathLike, scale: float) -> dict[str, Any]:
    """What a sidecar records of one LoRA: `{"path", "sha256", "scale"}` (a folder: its LoRA file's hash)."""
    path = Path(path)
    file = path
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        file = next((p for p in files if p.name == "pytorch_lora_weights.safetensors"), files[0] if files else path)
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest(), "scale": scale}


def load_loras(pipe: VideoLoraLoaderMixin, specs: list[tuple[str | os.PathLike, float]]) -> list[dict[str, Any]]:
    """Load each `(path, scale)` as its own adapter (`lora0`, `lora1`, ...) and activate them all at their scales.
    Returns the sidecar records, in order."""
    scales = [check_scale(scale) for _, scale in specs]
    names = []
    try:
        for i, (path, _) in enumerate(specs):
            pipe.load_lora_weights(path, adapter_name=f"lora{i}")
            names.append(f"lora{i}")
        if names:
            pipe.set_adapters(names, scales)
    except Exception:
        if names:  # all or none: the ones already loaded go again
            pipe.delete_adapters(names)
        raise
    return [lora_record(path, scale) for path, scale in specs]
