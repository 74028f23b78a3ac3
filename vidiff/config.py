"""Run configs: YAML files under `configs/` map onto these dataclasses; unknown keys are an error, and every value is
checked against its field's type by pydantic (`validate_fields`), which names the key, the value and the type.

What a model *is* lives in its saved config; how one run goes lives here. Command-line overrides use the
same key names: `vidiff train --config configs/train/temporal.yaml max_steps=200 data=my_videos`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from vidiff.errors import VidiffInputError

T = TypeVar("T")
MAX_SEED = 2**63 - 1  # torch generators take up to 2**64 - 1; the headroom covers seed + clip or window index
LOSS_WEIGHTINGS = ("none", "velocity")  # TrainConfig.loss_weighting


@dataclass
class TrainConfig:
    # --- what to train on, and where results go
    model: str = ""  # video model folder (from `vidiff inflate`), or a Stable Diffusion folder, inflated on load
    data: str = ""  # folder of videos, searched recursively; captions optional
    output: str = "runs/temporal"  # checkpoints, logs, validation clips, final weights
    trainable: str = "temporal"  # temporal: motion only (spatial frozen); all; spatial: the image layers only;
    # lora: peft LoRAs on lora_targets, everything else frozen, written as lora.safetensors in diffusers' format
    lora_rank: int = 8
    lora_alpha: float | None = None  # the LoRA's output is scaled by lora_alpha / lora_rank; None: lora_rank (1.0)
    # temporal: the motion modules' attention q, k, v and out (a MotionLoRA); spatial: the image layers' attention
    # (self- and cross-attention) q, k, v and out; both
    lora_targets: str = "temporal"
    # also train the text encoder: for an encoder that never had to keep motion words apart (a text-to-image model
    # trained only on still images, like the tiny default's); CLIP from real Stable Diffusion keeps them apart
    train_text_encoder: bool = False
    # share of samples whose timestep is drawn from the noisiest 10 % of the schedule instead of all of it (like
    # diffusers' timestep_bias_strategy="later"): where a clip's layout must come from the caption, not the noise
    high_noise_fraction: float = 0.0
    # none: plain MSE on the model's prediction target. velocity: each sample's MSE rescaled to that of the v-target
    # it implies (Salimans & Ho 2022), whatever the model predicts: for epsilon x 1 / alpha_bar_t, which is ~200 at
    # SD's t = 999. Epsilon's plain MSE hardly weighs the noisiest steps, where the caption must set the layout
    loss_weighting: str = "none"
    # generate: text-to-video. interpolate: Make-A-Video's masked-frame model, learnt by hiding frames; a base video
    # model is widened on load (vidiff.models.interpolation), so use trainable: all (its new inputs must learn)
    task: str = "generate"
    keep_every: list[int] = field(default_factory=lambda: [2, 4, 8])  # interpolate: every k-th frame known, k drawn
    extrapolate_fraction: float = 0.2  # interpolate: share of clips whose first 1-4 frames alone are known
    # interpolate / upscale: conv_in (whose new condition inputs start at zero) learns at this multiple of
    # learning_rate. Adam moves each weight about lr per step, so zero-initialised inputs at lr 2e-4 reached a tenth
    # of the latent inputs' size only after ~750 steps, and the model sampled as if it had no condition
    conv_in_lr_scale: float = 1.0
    # upscale: a super-resolution model (x4-upscaler layout, vidiff.pipelines.upscale) learns to restore clips that
    # are blurred (Gaussian, sigma drawn up to lowres_blur_max high-res pixels), downsampled by its scale and
    # noise-augmented (level drawn up to lowres_noise_max, also its class label); `resolution` is the high-res size
    lowres_blur_max: float = 1.0
    lowres_noise_max: int = 250

    # --- clips
    num_frames: int = 16
    frame_stride: int = 2  # take every k-th frame; ignored when target_fps is set
    target_fps: float | None = None  # resample clips to this rate instead of a fixed stride
    resolution: int = 256  # square training size: shorter side resized to this, then cropped
    random_crop: bool = False  # centre crop otherwise
    short_videos: str = "stride"  # a video shorter than one clip: "stride" (take a smaller stride) or "skip"
    caption_dropout: float = 0.1  # share of empty captions, so the model also learns the unconditional branch
    cache_latents: bool = False  # encode each clip with the VAE once (fixed start, centre crop), then train on latents

    # --- optimisation
    max_steps: int = 1000
    batch_size: int = 1  # per process
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"  # any diffusers.optimization scheduler name: constant, cosine, linear, ...
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no, fp16, bf16 (accelerate)
    gradient_checkpointing: bool = False
    ema: bool = False  # keep an exponential moving average of the trained weights; used for the final export
    ema_decay: float = 0.999
    seed: int = 0

    # --- bookkeeping
    checkpoint_every: int = 500  # steps; checkpoints are written atomically
    keep_checkpoints: int = 3  # the newest K are kept
    log_every: int = 10
    validation_every: int = 0  # steps between validation clips (0: only at the end, if prompts are given)
    validation_prompts: list[str] = field(default_factory=list)
    validation_seeds: list[int] = field(default_factory=lambda: [0])
    validation_steps: int = 20
    num_workers: int = 0  # data loader worker processes

    def check(self) -> None:
        """Refuse wrong types (values given in Python are not converted) and bad values, naming the key."""
        validate_fields(type(self), vars(self), strict=True)
        for seed in (self.seed, *self.validation_seeds):
            check_seed(seed, "seed" if seed is self.seed else "validation_seeds")
        choices = {"trainable": ("temporal", "all", "spatial", "lora"), "short_videos": ("stride", "skip"),
                   "lora_targets": ("temporal", "spatial", "both"),
                   "task": ("generate", "interpolate", "upscale"),
                   "mixed_precision": ("no", "fp16", "bf16")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise VidiffInputError(f"{key}={getattr(self, key)!r}; choose one of {', '.join(allowed)}")
        for key in ("num_frames", "frame_stride", "resolution", "max_steps", "batch_size", "checkpoint_every",
                    "keep_checkpoints", "gradient_accumulation_steps"):
            if getattr(self, key) < 1:
                raise VidiffInputError(f"{key}={getattr(self, key)} must be at least 1")
        if not 0 <= self.caption_dropout <= 1:
            raise VidiffInputError(f"caption_dropout={self.caption_dropout} must be within 0..1")
        if self.task == "interpolate" and (not self.keep_every or min(self.keep_every) < 2
                                           or max(self.keep_every) >= self.num_frames):
            raise VidiffInputError(f"keep_every={self.keep_every} must list gaps within 2..{self.num_frames - 1}")
        if self.task == "interpolate" and self.trainable == "temporal":
            raise VidiffInputError("task: interpolate with trainable: temporal would never train the masked-frame "
                                   "inputs (conv_in is a spatial layer); set trainable: all")
        if self.task != "generate" and self.validation_prompts:
            raise VidiffInputError(f"validation_prompts sample text-to-video clips, which a task: {self.task} model "
                                   f"does not make; set validation_prompts: [] for task: {self.task}")
        if self.lowres_blur_max < 0 or not 0 <= self.lowres_noise_max <= 1000:
            raise VidiffInputError(f"lowres_blur_max={self.lowres_blur_max} must be >= 0 and lowres_noise_max="
                                   f"{self.lowres_noise_max} within 0..1000")
        if self.conv_in_lr_scale <= 0:
            raise VidiffInputError(f"conv_in_lr_scale={self.conv_in_lr_scale} must be positive")
        if not 0 <= self.extrapolate_fraction <= 1:
            raise VidiffInputError(f"extrapolate_fraction={self.extrapolate_fraction} must be within 0..1")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise VidiffInputError(f"loss_weighting={self.loss_weighting!r} must be one of "
                                   f"{', '.join(LOSS_WEIGHTINGS)}")
        if not 0 <= self.high_noise_fraction <= 1:
            raise VidiffInputError(f"high_noise_fraction={self.high_noise_fraction} must be within 0..1")
        alpha_ok = self.lora_alpha is None or (isinstance(self.lora_alpha, (int, float))
                                               and not isinstance(self.lora_alpha, bool) and self.lora_alpha > 0)
        if self.lora_rank < 1 or not alpha_ok:
            raise VidiffInputError(f"lora_rank={self.lora_rank} must be at least 1 and lora_alpha={self.lora_alpha} "
                                   "positive (or unset: lora_rank)")
        if self.trainable == "lora" and (self.task != "generate" or self.train_text_encoder):
            raise VidiffInputError("trainable: lora trains LoRAs on the U-Net of a text-to-video model; it takes "
                                   "task: generate and train_text_encoder: false")
        for key in ("model", "data"):
            if not getattr(self, key):
                raise VidiffInputError(f"no {key} given; set it in the config or pass {key}=PATH")


def check_seed(seed: int | None, name: str = "seed") -> None:
    """Refuse a seed no generator takes (None: none given)."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise VidiffInputError(f"{name} {seed} must be within 0..{MAX_SEED} (2**63 - 1)")


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] = ()) -> T:
    """Build `cls` from a YAML file (optional) and `key=value` overrides; unknown keys raise `VidiffInputError`."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise VidiffInputError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise VidiffInputError(f"{path} must hold a mapping of settings")
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise VidiffInputError(f"override {override!r} must look like key=value")
        values[key.strip()] = yaml.safe_load(raw)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise VidiffInputError(f"unknown config keys {unknown}; known keys: {', '.join(sorted(known))}")
    return cls(**validate_fields(cls, values))


def validate_fields(cls: type, values: dict[str, Any], strict: bool = False, where: str = "") -> dict[str, Any]:
    """`values` checked against the dataclass `cls`'s field types by pydantic, and converted where YAML or a
    command line gives text for a number or a truth value (strict: no conversion, for values given in Python or
    JSON). Every wrong value becomes part of one `VidiffInputError` line naming the key, the value and the type
    expected; `where` (e.g. "prompts.jsonl:3: ") leads it."""
    try:
        checked = _validator(cls, strict).model_validate(values)
    except pydantic.ValidationError as error:
        hints = typing.get_type_hints(cls)
        problems = []
        for item in error.errors():
            key = str(item["loc"][0]) + "".join(f"[{part}]" for part in item["loc"][1:])
            hint = hints.get(item["loc"][0])
            if len(item["loc"]) > 1 and typing.get_origin(hint) is list:  # an item of a list: the item's type
                hint = typing.get_args(hint)[0]
            expected = _type_name(hint)
            problems.append(f"{key}={item['input']!r} is not a valid {expected} ({item['msg'][0].lower()}"
                            f"{item['msg'][1:]})")
        raise VidiffInputError(where + "; ".join(problems)) from None
    return checked.model_dump(include=set(values))


@functools.lru_cache(maxsize=None)
def _validator(cls: type, strict: bool) -> type[pydantic.BaseModel]:
    """A pydantic model with `cls`'s fields and types (numbers given for text fields become text: paths like 2024)."""
    hints, fields = typing.get_type_hints(cls), {}
    for item in dataclasses.fields(cls):
        fields[item.name] = (hints[item.name], item.default if item.default is not dataclasses.MISSING else None)
    config = pydantic.ConfigDict(extra="forbid", strict=strict, coerce_numbers_to_str=not strict)
    return pydantic.create_model(f"{cls.__name__}Fields", __config__=config, **fields)


def _type_name(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return text or str(hint).replace("typing.", "")
