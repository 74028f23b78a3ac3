"""`vidiff interpolate`: fill in frames between the frames of a video with a masked-frame model."""

from __future__ import annotations

import argparse
import time

from vidiff.cli.common import (CHECKS, LIBRARIES, add_device, add_overwrite, add_progress, check_new_output,
                                check_room_for, model_or_default)
from vidiff.errors import VidiffInputError
from vidiff.process import import_quickly


def add_parser(sub) -> None:
    p = sub.add_parser(
        "interpolate",
        help="fill in frames between the frames of a video (masked-frame interpolation model)",
        description="Turn N frames into (N - 1) * FACTOR + 1: a masked-frame diffusion model (Make-A-Video's "
        "frame interpolation, trained with `vidiff train ... task=interpolate`) generates the frames between each "
        "pair of input frames. The input frames come back unchanged. Inputs longer than the model's window run "
        "in windows that share their boundary frames. Writes a JSON sidecar beside the output.",
    )
    p.add_argument("input", help="any readable video (.mp4 .mov .avi .mkv .webm .gif) or a folder of frames")
    p.add_argument("--factor", type=int, required=True, help="frames out per frame in: N -> (N - 1) * FACTOR + 1")
    p.add_argument("-o", "--output", required=True,
                   help="output path: .mp4 .gif .webm .mkv (lossless), or a folder for PNGs")
    p.add_argument("--model", help="a cascade folder naming an interpolation stage, or a model trained with `vidiff "
                   "train ... task=interpolate` (default: the stage shipped with vidiff, trained on the shapes world)")
    p.add_argument("--fps", type=float, help="output frame rate (default: the input's times --factor)")
    p.add_argument("--steps", type=int, help="denoising steps per window (default: the stage's recommendation in "
                   "cascade.json, else 10)")
    p.add_argument("--init", choices=("noise", "blend", "nearest"), help="start from pure noise, or from the "
                   "keyframes' blend (or the nearer keyframe) noised part-way (default: the stage's recommendation)")
    p.add_argument("--strength", type=float, help="with --init blend/nearest: how much of the schedule runs, in "
                   "(0, 1]; lower keeps more of the start (default: the stage's recommendation)")
    p.add_argument("--prompt", default="", help="optional text describing the video (default: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled frames (default 0)")
    add_overwrite(p)
    add_device(p)
    add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import_quickly(CHECKS)
    from vidiff.devices import pick_device, pick_dtype

    start = time.perf_counter()
    # 1. Check everything that can be checked without loading a model
    if args.factor < 2:
        raise VidiffInputError(f"--factor {args.factor} must be at least 2 (frames out = (N - 1) * factor + 1)")
    if args.fps is not None and args.fps <= 0:
        raise VidiffInputError(f"--fps {args.fps} must be positive")
    from vidiff.config import check_seed
    from vidiff.model_folder import check_video_model
    from vidiff.pipelines.cascade import interpolation_stage, load_interpolation

    check_seed(args.seed, "--seed")
    model = model_or_default(args.model)
    check_new_output(args.output, args.overwrite)
    check_video_model(model)
    interpolation_stage(model)  # a cascade naming one, or a masked-frame model itself
    interpolation_sampling(model, args)
    from vidiff.io.video import read_video, write_video

    frames, fps = read_video(args.input)  # unreadable or missing input: a one-line error, exit 2
    from vidiff.pipelines.interpolate import check_interpolation_inputs, interpolate

    check_interpolation_inputs(frames, args.factor)
    check_room_for(args.output, (len(frames) - 1) * args.factor + 1, *frames.shape[1:3])

    # 2. Load and interpolate
    import_quickly(LIBRARIES)
    device = pick_device(args.device)
    pipe = load_interpolation(model, device, pick_dtype("auto", device))
    pipe.set_progress_bar_config(disable=not args.progress)
    sampling = interpolation_sampling(model, args)
    out = interpolate(pipe, frames, args.factor, prompt=args.prompt, seed=args.seed, show_progress=args.progress,
                      **sampling)
    out_fps = args.fps if args.fps is not None else fps * args.factor
    write_video(out, args.output, fps=out_fps, metadata={
        "input": str(args.input), "input_frames": len(frames), "input_fps": fps, "factor": args.factor,
        "model": str(model), **sampling, "seed": args.seed, "prompt": args.prompt,
        "seconds": round(time.perf_counter() - start, 2)}, overwrite=args.overwrite)
    print(f"wrote {args.output}: {len(frames)} -> {len(out)} frames at {out_fps:g} fps")
    return 0


def interpolation_sampling(model, args) -> dict:
    from vidiff.pipelines.cascade import interpolation_settings

    return interpolation_settings(model, args.steps, args.init, args.strength)
