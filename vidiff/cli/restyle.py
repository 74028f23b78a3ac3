"""`vidiff restyle`: a video and a prompt in, the video redrawn under the prompt out (parse, check, call, write)."""

from __future__ import annotations

import argparse
import sys
import time

from vidiff.cli.clip_options import (add_cascade_options, check_input_size, check_strength, plan_job, run_cascade,
                                      window_settings)
from vidiff.cli.common import CHECKS, model_or_default
from vidiff.process import import_quickly


def add_parser(sub) -> None:
    p = sub.add_parser(
        "restyle",
        help="redraw a video under a new prompt (video to video)",
        description="Restyle a video: its frames are encoded, noised part of the way (--strength) and denoised "
        "under the prompt by the base model, so layout and motion stay while the prompt changes what is drawn "
        "(SDEdit on clips, as diffusers' AnimateDiffVideoToVideoPipeline). Videos longer than the model's "
        "max_frames run in FreeNoise windows. Then the cascade's later stages run as in `vidiff generate`.",
    )
    p.add_argument("input", help="any readable video (.mp4 .mov .avi .mkv .webm .gif) or a folder of frames, of the "
                   "size the model samples at (the shipped model: 64x64), or pass --height/--width")
    p.add_argument("prompt", help="what the video should show, e.g. \"a blue circle moving right\"")
    p.add_argument("--strength", type=float, default=0.6, help="how much of the schedule runs, in (0, 1]: 1 redraws "
                   "from noise, lower keeps more of the input (default 0.6)")
    add_cascade_options(p, num_frames=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import_quickly(CHECKS)

    # 1. Check everything that can be checked without loading a model
    model, job, stages, windows, frames, fps = check_inputs(args)

    # 2. Load the cascade, restyle, write
    written = run_cascade(args, model, job, stages, windows, fps=args.fps or fps,
                          record={"input": str(args.input), "strength": args.strength},
                          video=frames, strength=args.strength)
    for path in written:
        print(f"wrote {path}")
    print(f"1 clip in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def check_inputs(args: argparse.Namespace):
    """(model, job, stages, FreeNoise options or None, the input frames uint8 (f, h, w, 3), their fps), checked
    before any model loads."""
    from vidiff.cli import jobs as gen
    from vidiff.cli.generate import check_stages
    from vidiff.io.video import read_video

    check_strength(args.strength)
    model = model_or_default(args.model)
    gen.check_model_settings(model, [])
    frames, fps = read_video(args.input)  # unreadable or missing input: a one-line error, exit 2
    height, width = check_input_size(frames, args, model, "video")
    job = plan_job(args, model, args.prompt, len(frames), height, width)
    windows = window_settings(args, model, len(frames), "restyle")
    gen.check_model_settings(model, [job], long_clips=windows is not None)
    return model, job, check_stages(args, model, [job]), windows, frames, fps
