"""`vidiff upscale`: raise a video's resolution with the super-resolution stage."""

from __future__ import annotations

import argparse
import time

from vidiff.cli.common import (CHECKS, LIBRARIES, add_device, add_overwrite, add_progress, check_new_output,
                                check_room_for, model_or_default)
from vidiff.errors import VidiffInputError
from vidiff.process import import_quickly


def add_parser(sub) -> None:
    p = sub.add_parser(
        "upscale",
        help="raise a video's resolution with the super-resolution stage (temporally consistent upscaler)",
        description="Upscale every frame of a video with a diffusion upscaler (Stable Diffusion x4-upscaler layout "
        "with temporal layers). Every frame starts from the same noise so invented detail agrees across frames; "
        "long videos run in overlapping windows of frames (--window, --overlap), which with the chunked VAE "
        "decode bound the memory.",
    )
    p.add_argument("input", help="any readable video (.mp4 .mov .avi .mkv .webm .gif) or a folder of frames")
    p.add_argument("--scale", type=int, required=True, help="size factor: the model's own scale (4 for an x4 "
                   "upscaler) or a power of it, run in passes")
    p.add_argument("-o", "--output", required=True,
                   help="output path: .mp4 .gif .webm .mkv (lossless), or a folder for PNGs")
    p.add_argument("--model", help="a cascade folder naming an upscale stage, or an upscaler model folder: `vidiff "
                   "inflate` of a Stable Diffusion x4-upscaler folder, or a model trained with task: upscale "
                   "(default: the 2x stage shipped with vidiff, trained on the shapes world)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the stage's cascade.json recommendation, "
                   "else 25)")
    p.add_argument("--noise-level", type=int, help="noise added to the low-res frames, 0..350 (default: the "
                   "stage's recommendation, else 20 as Stable Diffusion's upscaler); more hides compression artefacts")
    p.add_argument("--prompt", default="", help="optional text describing the video (default: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default 0)")
    p.add_argument("--window", type=int, help="frames per U-Net call (default: the model's max_frames); lower "
                   "to use less memory")
    p.add_argument("--overlap", type=int, default=4, help="frames shared by neighbouring windows (default 4)")
    p.add_argument("--independent-noise", action="store_true", help="start every frame from its own noise "
                   "(flickers more; for comparison)")
    add_overwrite(p)
    add_device(p)
    add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import_quickly(CHECKS)
    from vidiff.config import check_seed
    from vidiff.devices import pick_device, pick_dtype
    from vidiff.pipelines.cascade import load_upscaler, upscale_settings, upscaler_geometry

    start = time.perf_counter()
    # 1. Check everything that can be checked without loading a model
    check_upscale_settings(args)
    check_seed(args.seed, "--seed")
    model = model_or_default(args.model)
    check_new_output(args.output, args.overwrite)
    model_scale, fold = upscaler_geometry(model)  # a cascade naming an upscale stage, or an upscaler itself
    from vidiff.pipelines.upscale import upscale, upscale_passes

    upscale_passes(args.scale, model_scale)
    settings = upscale_settings(model, args.steps, args.noise_level)
    from vidiff.io.video import read_video, write_video

    frames, fps = read_video(args.input)  # unreadable or missing input: a one-line error, exit 2
    if frames.shape[1] % fold or frames.shape[2] % fold:
        raise VidiffInputError(f"frame size {frames.shape[2]}x{frames.shape[1]} must be a multiple of {fold} for "
                               "this upscaler; resize or crop the video first")
    check_room_for(args.output, len(frames), frames.shape[1] * args.scale, frames.shape[2] * args.scale)

    # 2. Load and upscale
    import_quickly(LIBRARIES)
    device = pick_device(args.device)
    pipe = load_upscaler(model, device, pick_dtype("auto", device))
    pipe.set_progress_bar_config(disable=not args.progress)
    out = upscale(pipe, frames, args.scale, prompt=args.prompt, seed=args.seed, shared_noise=not args.independent_noise,
                  window=args.window, overlap=args.overlap, show_progress=args.progress, **settings)
    write_video(out, args.output, fps=fps, metadata={
        "input": str(args.input), "input_size": [int(frames.shape[2]), int(frames.shape[1])], "scale": args.scale,
        "model": str(model), "steps": settings["num_inference_steps"], "noise_level": settings["noise_level"],
        "seed": args.seed,
        "prompt": args.prompt, "shared_noise": not args.independent_noise, "window": args.window,
        "seconds": round(time.perf_counter() - start, 2)}, overwrite=args.overwrite)
    print(f"wrote {args.output}: {frames.shape[2]}x{frames.shape[1]} -> {out.shape[2]}x{out.shape[1]}, "
          f"{len(out)} frames")
    return 0


def check_upscale_settings(args: argparse.Namespace) -> None:
    if args.scale < 2:
        raise VidiffInputError(f"--scale {args.scale} must be at least 2")
    if args.steps is not None and args.steps < 1:
        raise VidiffInputError(f"--steps {args.steps} must be at least 1")
    if args.noise_level is not None and not 0 <= args.noise_level <= 350:
        raise VidiffInputError(f"--noise-level {args.noise_level} must be within 0..350")
    if args.window is not None and args.window < 2:
        raise VidiffInputError(f"--window {args.window} must be at least 2 frames")
    if args.overlap < 0 or (args.window is not None and args.overlap >= args.window):
        raise VidiffInputError(f"--overlap {args.overlap} must be at least 0 and below --window")
