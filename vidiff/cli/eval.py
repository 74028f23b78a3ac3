"""`vidiff eval`: judge a video model on the shapes world."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidiff.cli.common import CHECKS, LIBRARIES, add_device, add_progress
from vidiff.process import import_quickly


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="judge a video model on the shapes world (colour, shape, direction accuracy)",
        description="Generate clips from the caption of every colour-shape-direction combination of the shapes "
        "world, read colour, shape and direction back from their pixels, and report accuracies for combinations "
        "seen in training and held out of it. Prints a markdown table and writes eval.json and eval.md.",
    )
    p.add_argument("--model", help="video model folder (default: the model shipped with vidiff)")
    p.add_argument("--baseline", metavar="IMAGE_MODEL_DIR", help="also judge this Stable Diffusion image model, "
                   "every frame sampled on its own: what the video model scores without temporal layers")
    p.add_argument("--ground-truth", action="store_true", help="judge rendered clips instead of a model (a check "
                   "of the judge; frame size from --model if given, else 64)")
    p.add_argument("--clips-per-combo", type=int, default=8, help="clips per combination (default 8)")
    p.add_argument("--split", default="all", help="all (84 combinations, default), train (76) or heldout (8)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's "
                   "sampling.json recommendation, else 7.5; the shipped tiny model recommends 1.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole evaluation (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per sampling call (default 8)")
    p.add_argument("--out", default="eval-report", help="report folder for eval.json and eval.md "
                   "(default eval-report/)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    add_device(p)
    add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import_quickly(CHECKS)
    from vidiff.config import check_seed
    from vidiff.eval import run
    from vidiff.model_folder import DEFAULT_GUIDANCE, default_model, recommended_guidance

    # 1. Check everything that can be checked without loading a model
    model = Path(args.model) if args.model else None
    if not args.ground_truth and model is None:
        model = default_model()
    if args.guidance is None:
        args.guidance = recommended_guidance(model) if model is not None else DEFAULT_GUIDANCE
    run.check_settings(args.clips_per_combo, args.split, args.frames, args.steps, args.batch_size, args.guidance)
    run.check_device(args.device)
    check_seed(args.seed, "--seed")
    run.check_out_dir(args.out, args.overwrite)
    if model is not None:
        run.check_video_model(model, args.frames, args.steps)
    if args.baseline:
        run.check_image_model(args.baseline)

    # 2. Generate (or render) and judge
    if not args.ground_truth or args.baseline:  # ground truth alone is rendered, no model is loaded
        import_quickly(LIBRARIES)
    options = dict(clips_per_combo=args.clips_per_combo, split=args.split, num_frames=args.frames, seed=args.seed,
                   progress=args.progress)
    sampling = dict(steps=args.steps, guidance=args.guidance, batch_size=args.batch_size, device=args.device)
    if args.ground_truth:
        result = run.evaluate_ground_truth(**options, size=run.frame_size(model) if model else 64)
    else:
        result = run.evaluate_model(model, **options, **sampling)
    baseline = run.evaluate_image_baseline(args.baseline, **options, **sampling) if args.baseline else None

    # 3. Report
    paths = run.write_report(result, args.out, baseline, overwrite=args.overwrite)
    print(run.report_markdown(result, baseline), end="")
    print(f"wrote {paths[0]} and {paths[1]}", file=sys.stderr)
    return 0
