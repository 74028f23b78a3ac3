"""`vidiff animate`: an image and a prompt in, a clip that starts on the image out (parse, check, call, write)."""

from __future__ import annotations

import argparse
import sys
import time

from vidiff.cli.clip_options import (add_cascade_options, check_input_size, plan_job, read_image, run_cascade,
                                      window_settings)
from vidiff.cli.common import CHECKS, model_or_default
from vidiff.errors import VidiffInputError
from vidiff.process import import_quickly


def add_parser(sub) -> None:
    p = sub.add_parser(
        "animate",
        help="make a clip that starts on an image (image to video)",
        description="Animate an image: it is frame 0 of the clip, returned pixel for pixel, and the model continues "
        "it as the prompt says. Then the cascade's later stages (interpolation, upscaling) run as in `vidiff "
        "generate`, with the same flags. Writes a JSON sidecar beside the output.",
    )
    p.add_argument("image", help="the first frame: a PNG or JPG of the size the model samples at (the shipped model: "
                   "64x64), or pass --height/--width")
    p.add_argument("prompt", help="what the clip shows, e.g. \"a red circle moving right\"")
    p.add_argument("--method", choices=("guided", "masked"), default="guided", help="guided (default): the base "
                   "model continues the image under reconstruction guidance; masked: the interpolation stage, a "
                   "masked-frame model, reads the image as its known frame 0 (docs/long-clips.md compares them)")
    add_cascade_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import_quickly(CHECKS)

    # 1. Check everything that can be checked without loading a model
    model, job, stages, windows, image = check_inputs(args)

    # 2. Load the cascade, animate, write
    written = run_cascade(args, model, job, stages, windows, fps=args.fps or 8,
                          extra_stages=("interpolation",) if args.method == "masked" else (),
                          record={"image": str(args.image), "image_method": args.method},
                          image=image, image_method=args.method)
    for path in written:
        print(f"wrote {path}")
    print(f"1 clip in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def check_inputs(args: argparse.Namespace):
    """(model, job, stages, FreeNoise options or None, the image as uint8 (h, w, 3)), checked from configs alone."""
    from vidiff.cli import jobs as gen
    from vidiff.cli.generate import check_stages
    from vidiff.pipelines.cascade import interpolation_stage

    model = model_or_default(args.model)
    gen.check_model_settings(model, [])
    if args.num_frames < 2:
        raise VidiffInputError(f"--num-frames {args.num_frames} must be at least 2: frame 0 is the image")
    animator = interpolation_stage(model).path if args.method == "masked" else model
    image = read_image(args.image)
    height, width = check_input_size(image, args, model, "image")
    job = plan_job(args, model, args.prompt, args.num_frames, height, width)
    windows = window_settings(args, animator, args.num_frames, "animate")
    gen.check_model_settings(model, [job], long_clips=windows is not None)
    return model, job, check_stages(args, model, [job]), windows, image
