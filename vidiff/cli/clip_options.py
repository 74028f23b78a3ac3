"""What `vidiff generate`, `animate` and `restyle` share beyond the common options: long clips in FreeNoise windows,
prompt travel files, input images and videos checked against the model, and the cascade flags of animate and restyle.

Everything here checks input from the model's configs alone, before any weights load (exit 2 with one line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path

from vidiff.cli.common import add_device, add_overwrite, add_progress
from vidiff.errors import VidiffInputError

DEFAULT_CONTEXT_STRIDE = 4  # diffusers' enable_free_noise default


def add_window_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context-length", type=int, help="frames each temporal-attention window reads (FreeNoise; "
                   "default: the model's max_frames). Clips longer than the model's max_frames switch windows on "
                   "by themselves")
    p.add_argument("--context-stride", type=int, help=f"frames between the starts of neighbouring windows (default "
                   f"{DEFAULT_CONTEXT_STRIDE}); must be below --context-length")


def add_lora_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", action="append", default=[], metavar="PATH[=SCALE]", help="a LoRA on the base model at "
                   "SCALE (default 1.0): a diffusers / peft .safetensors file or folder, a kohya / A1111 SD LoRA, or "
                   "an AnimateDiff MotionLoRA .ckpt. Repeat it to mix several; the sidecar records each one's path, "
                   "sha256 and scale")


def check_loras(args: argparse.Namespace) -> tuple[list, dict]:
    """`--lora` as `[(path, scale)]`, and what the sidecar records of them (`{}` without LoRAs); the files are hashed
    here, their contents are checked against the model when it is loaded."""
    if not args.lora:
        return [], {}
    from vidiff.pipelines.lora import lora_record, parse_lora_spec

    specs = []
    for spec in args.lora:
        try:
            specs.append(parse_lora_spec(spec))
        except FileNotFoundError as error:
            raise VidiffInputError(f"--lora {spec}: {error}; give the path of a LoRA file") from None
        except ValueError as error:
            raise VidiffInputError(f"--lora {error}") from None
    return specs, {"loras": [lora_record(path, scale) for path, scale in specs]}


def add_cascade_options(p: argparse.ArgumentParser, num_frames: bool = True) -> None:
    """The sampling and cascade flags of `vidiff generate`, for the commands that start from an image or a video."""
    p.add_argument("-o", "--output", required=True, help="output path: .mp4 .gif .webm .mkv (lossless), or a folder "
                   "for PNG frames; a JSON sidecar is written beside it")
    p.add_argument("--model", help="video model folder (default: the model shipped with vidiff)")
    p.add_argument("--negative-prompt", help="what to steer away from (classifier-free guidance)")
    if num_frames:
        p.add_argument("--num-frames", type=int, default=16, help="frames the model makes, the image being frame 0 "
                       "(default 16; above the model's max_frames, in FreeNoise windows)")
    p.add_argument("--height", type=int, help="frame height in pixels the model samples at (default: the model's); "
                   "the input must have this size")
    p.add_argument("--width", type=int, help="frame width in pixels (default: the model's); the input must have it")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's "
                   "sampling.json recommendation, else 7.5)")
    p.add_argument("--scheduler", default="ddim", help="ddim (default), dpm++ or euler")
    p.add_argument("--seed", type=int, help="seed (random if not given; always written to the sidecar)")
    p.add_argument("--fps", type=float, help="frames per second of the model's frames (default 8, or the input "
                   "video's); with --interpolate K the clip is written at K times this")
    p.add_argument("--interpolate", type=int, metavar="K", help="then fill in frames with the model's interpolation "
                   "stage: N -> (N - 1) * K + 1 (default: the model's cascade.json; 1: off)")
    p.add_argument("--interpolate-steps", type=int, help="denoising steps of each interpolation window")
    p.add_argument("--upscale", type=int, metavar="S", help="then raise the resolution S times with the model's "
                   "super-resolution stage (default: the model's cascade.json; 1: off)")
    p.add_argument("--upscale-steps", type=int, help="denoising steps of the upscaler")
    add_window_options(p)
    add_lora_option(p)
    p.add_argument("--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16")
    add_device(p)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    add_progress(p)
    add_overwrite(p)
    p.set_defaults(cpu_offload=False, compile=False)


def window_settings(args: argparse.Namespace, model, num_frames: int, command: str) -> dict | None:
    """`enable_free_noise` options for clips of `num_frames`: windows when the clip is longer than the model's
    max_frames (said in one line on stderr) or when a window option is given; None otherwise."""
    from vidiff.model_folder import check_video_model

    max_frames = check_video_model(model)["max_frames"]  # a folder that is no video model: one line, exit 2
    length, stride = args.context_length, args.context_stride
    if num_frames <= max_frames and length is None and stride is None:
        return None
    length = max_frames if length is None else length
    stride = min(DEFAULT_CONTEXT_STRIDE, max(1, length - 1)) if stride is None else stride
    if length < 2 or stride < 1:
        raise VidiffInputError(f"--context-length {length} must be at least 2 and --context-stride {stride} at least 1")
    if stride >= length:
        raise VidiffInputError(f"--context-stride {stride} must be smaller than --context-length {length}, so that "
                               "neighbouring windows overlap")
    if length > max_frames:
        raise VidiffInputError(f"--context-length {length} is more than the model's max_frames {max_frames}; use windows "
                               f"of at most {max_frames} frames")
    if num_frames > max_frames:
        print(f"vidiff {command}: {num_frames} frames is more than the model's {max_frames}: sampling in sliding "
              f"windows of {length} frames every {stride} (FreeNoise; --context-length, --context-stride)",
              file=sys.stderr)
    return {"context_length": length, "context_stride": stride}


def read_prompt_travel(path: str, num_frames: int) -> dict[int, str]:
    """A JSON object {"frame": "prompt", ...} -> {frame: prompt}, every key an integer within [0, num_frames)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt travel file not found: {path}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise VidiffInputError(f"{path} is not valid JSON ({error}); write {{\"0\": \"a prompt\", \"24\": \"another\"}}") \
            from None
    if not isinstance(entries, dict) or not entries:
        raise VidiffInputError(f"{path} must hold a JSON object of frame -> prompt, like {{\"0\": \"a red circle moving "
                               "right\", \"24\": \"a blue circle moving right\"}}")
    travel = {}
    for key, text in entries.items():
        if not re.fullmatch(r"\d+", key.strip()):
            raise VidiffInputError(f"{path}: prompt travel key {key!r} is not an integer frame index")
        if int(key) >= num_frames:
            raise VidiffInputError(f"{path}: prompt travel key {key} is outside [0, {num_frames}), the clip's frames; "
                                   "raise --num-frames or lower the key")
        if not isinstance(text, str) or not text.strip():
            raise VidiffInputError(f"{path}: frame {key} needs a non-empty prompt string")
        travel[int(key)] = text
    return dict(sorted(travel.items()))


def read_image(path: str):
    """An image file -> uint8 (h, w, 3) RGB (an animated file: its first frame); one line naming the file when it
    cannot be read."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise VidiffInputError(f"cannot read image {path}: {reason}") from None


def model_size(args: argparse.Namespace, model) -> tuple[int, int]:
    """(height, width) the base model samples at: --height/--width, else the model's own size."""
    from vidiff.model_folder import component_config, vae_scale_factor

    side = component_config(model, "unet")["spatial_config"]["sample_size"] * \
        vae_scale_factor(component_config(model, "vae"))
    return (args.height or side), (args.width or side)


def check_input_size(frames, args: argparse.Namespace, model, name: str) -> tuple[int, int]:
    """Refuse an input image or video whose size is not the size the model samples at, naming both sizes."""
    height, width = model_size(args, model)
    h, w = frames.shape[-3:-1]
    if (h, w) != (height, width):
        given = "--height/--width" if args.height or args.width else "the model's size"
        raise VidiffInputError(f"the {name} is {w}x{h} but the model samples {width}x{height} ({given}); resize the "
                               f"{name} to {width}x{height}, or pass --height {h} --width {w}")
    return height, width


def check_strength(strength: float) -> None:
    if not 0 < strength <= 1:
        raise VidiffInputError(f"--strength {strength} must be within (0, 1]: 1 redraws everything, lower keeps more of "
                               "the input video")


def plan_job(args: argparse.Namespace, model, prompt: str, num_frames: int, height: int, width: int):
    """The one clip of `animate` / `restyle` as a `generate` job: seed, output and settings, checked."""
    from vidiff.cli import jobs as gen
    from vidiff.model_folder import recommended_guidance

    if args.scheduler not in gen.SCHEDULER_NAMES:
        raise VidiffInputError(f"unknown scheduler {args.scheduler!r}; choose one of "
                               f"{', '.join(gen.SCHEDULER_NAMES)}")
    if args.fps is not None and args.fps <= 0:
        raise VidiffInputError(f"--fps {args.fps} must be positive")
    guidance = args.guidance if args.guidance is not None else recommended_guidance(model)
    job = gen.Job(prompt=prompt, negative_prompt=args.negative_prompt, num_frames=num_frames, height=height,
                  width=width, steps=args.steps, guidance=guidance)
    (job,) = gen.assign_seeds_and_outputs([job], args.output, args.seed)
    gen.check_output(job.output, args.overwrite)
    return job


def run_cascade(args: argparse.Namespace, model, job, stages: dict, windows: dict | None, fps: float,
                extra_stages: tuple[str, ...] = (), record: dict | None = None, **call) -> list[Path]:
    """Load the cascade (with `--lora`), switch FreeNoise windows on if asked, make the clip with `call` (image=,
    video=, ...) and write it with its sidecar, as `vidiff generate` does."""
    import time
    import types

    from vidiff.cli.common import LIBRARIES
    from vidiff.cli.jobs import run_jobs
    from vidiff.process import import_quickly

    device, dtype = settle_device(args)
    loras, lora_record = check_loras(args)
    import_quickly(LIBRARIES)
    load_start = time.perf_counter()
    single = types.SimpleNamespace(num_processes=1, is_local_main_process=True, device=device)
    pipe = load_cascade(args, model, stages, device, dtype, single, extra_stages, loras)
    if windows:
        pipe.enable_free_noise(**windows)
    load_s = time.perf_counter() - load_start
    return run_jobs(pipe, [job], fps=fps, scheduler=args.scheduler, model=str(model), load_s=load_s,
                    record={**(record or {}), **lora_record},
                    overwrite=args.overwrite, interpolate=stages["interpolate"], upscale=stages["upscale"],
                    interpolate_steps=args.interpolate_steps, upscale_steps=args.upscale_steps, **call)


def settle_device(args: argparse.Namespace):
    """The device and dtype to run on, and torch's thread count."""
    from vidiff.devices import pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    if args.threads is not None:
        if args.threads < 1:
            raise VidiffInputError(f"--threads {args.threads} must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    return device, dtype


@contextlib.contextmanager
def loading_bars(shown: bool):
    """diffusers' and transformers' own loading bars, off while loading under --no-progress."""
    import diffusers
    import transformers

    was = diffusers.utils.logging.is_progress_bar_enabled(), transformers.utils.logging.is_progress_bar_enabled()
    if not shown:
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        for library, enabled in zip((diffusers, transformers), was):
            if enabled:
                library.utils.logging.enable_progress_bar()


def load_cascade(args: argparse.Namespace, model, stages: dict, device, dtype, state, extra_stages=(), loras=()):
    """The model's VideoCascadePipeline with the stages this run uses (and `extra_stages`), on its device, set up as
    the flags say, with `loras` (`[(path, scale)]`) active on the base model."""
    from vidiff.pipelines.cascade import VideoCascadePipeline
    from vidiff.pipelines.lora import load_loras

    wanted = tuple(name for name, key in (("interpolation", "interpolate"), ("upscale", "upscale"))
                   if stages[key] > 1 or name in extra_stages)
    with loading_bars(args.progress):
        pipe = VideoCascadePipeline.from_pretrained(model, torch_dtype=dtype, stages=wanted)
    pipe.base.set_scheduler(args.scheduler)
    if args.cpu_offload:  # the later stages stay on the CPU, sharing the base's offloaded modules
        pipe.base.enable_model_cpu_offload(device=device)
    else:
        pipe.to(state.device if state.num_processes > 1 and args.device == "auto" else device)
    pipe.base.unet.set_attention_kernel("auto")
    if loras:  # a file that does not fit the model is a VidiffInputError, and nothing of it stays loaded
        load_loras(pipe.base, loras)
    if args.compile:
        pipe.base.compile_unet()
    pipe.set_progress_bar_config(disable=not args.progress or not state.is_local_main_process)
    return pipe
