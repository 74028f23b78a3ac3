"""Shapes-world measurements of long clips, image to video, video to video and prompt travel (issue 25).

    python scripts/eval_long.py long --clips-per-combo 2 --frames 128   # 128-frame clips in FreeNoise windows
    python scripts/eval_long.py animate --clips-per-combo 2              # held-out first frames, own captions
    python scripts/eval_long.py restyle --clips 8 --strengths 0.4 0.5 0.6 0.7 0.8
    python scripts/eval_long.py travel --clips 8                         # {0: red ..., 24: blue ...}, 32 frames

Each part runs the default model (or --model) through `VideoCascadePipeline`, as the commands do, judges every clip
with the pixel judge (vidiff.eval.judge) at the model's 64 px, and writes PART.json (every clip) and PART.md (the
summary) into --out (default docs/long-clips). Seeds come from --seed, so a rerun gives the same clips on the same
machine and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidiff.atomic import write_text
from vidiff.data.shapes import COLOURS, DIRECTION_VECTORS, HELD_OUT, caption, render_clip
from vidiff.eval.judge import judge_clip
from vidiff.eval.run import eval_seed
from vidiff.model_folder import component_config, default_model
from vidiff.pipelines.cascade import VideoCascadePipeline

STRIDE = 4  # FreeNoise's context_stride here (diffusers' default); window joins fall on multiples of it


def load(model: Path, stages: tuple[str, ...] = ()) -> VideoCascadePipeline:
    pipe = VideoCascadePipeline.from_pretrained(model, stages=stages)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def shift(a, b) -> float | None:
    return None if a is None or b is None else float(math.hypot(a[0] - b[0], a[1] - b[1]))


def per_frame(result: dict, expected: tuple[str, str, str]) -> dict:
    """Shares of frames whose object has the expected colour and shape, and of frames with exactly one object."""
    colour, shape, _ = expected
    return {"colour_frames": float(np.mean([c == colour for c in result["frame_colours"]])),
            "shape_frames": float(np.mean([s == shape for s in result["frame_shapes"]])),
            "single_frames": result["single_object_fraction"]}


def mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


# ---------------------------------------------------------------------------------------------------------------
# 1. Long clips
# ---------------------------------------------------------------------------------------------------------------


def seam_ratio(frames: np.ndarray, stride: int, length: int) -> tuple[float, float]:
    """(mean frame-to-frame change into frames where a window starts or ends, mean change elsewhere), in [0, 1]."""
    change = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3)) / 255  # change into frame t + 1
    joins = np.array([(t + 1) % stride == 0 and t + 1 < len(frames) for t in range(len(frames) - 1)])
    joins &= np.arange(1, len(frames)) >= stride
    return float(change[joins].mean()), float(change[~joins].mean())


def edge_behaviour(result: dict, direction: str, size: int) -> dict:
    """Where the object is along its direction of motion at frames 0, 15, 31, 63 and the last, in frame sides from
    the edge it moves towards (0: touching it), and what it did after first reaching it."""
    ux, uy = DIRECTION_VECTORS[direction]
    axis, sign = (0, ux) if ux else (1, uy)
    track = [None if c is None else (size - c[axis] if sign > 0 else c[axis]) / size for c in result["centroids"]]
    gaps = [g for g in track if g is not None]
    reached = next((t for t, g in enumerate(track) if g is not None and g <= min(gaps) + 0.02), None)
    after = [g for g in track[reached:] if g is not None] if reached is not None else []
    marks = {f"gap_{t}": None if t >= len(track) or track[t] is None else round(track[t], 3)
             for t in (0, 15, 31, 63, len(track) - 1)}
    moved_back = max(after) - min(gaps) if after else 0.0
    return {**marks, "closest_gap": round(min(gaps), 3) if gaps else None, "reached_at": reached,
            "backed_off_after": round(moved_back, 3),
            "missing_frames_after": sum(g is None for g in track[reached or 0:])}


def run_long(args, model: Path) -> dict:
    pipe = load(model)
    max_frames = component_config(model, "unet")["max_frames"]
    pipe.enable_free_noise(context_length=max_frames, context_stride=STRIDE)
    rows = []
    for i, combo in enumerate(HELD_OUT):
        for k in range(args.clips_per_combo):
            seed = eval_seed(args.seed, i, k)
            text = caption(*combo)
            call = dict(num_inference_steps=args.steps, interpolate=1, upscale=1)
            start = time.perf_counter()
            long = pipe(text, num_frames=args.frames, generator=torch.Generator().manual_seed(seed), **call).frames[0]
            seconds = time.perf_counter() - start
            short = pipe(text, num_frames=max_frames, generator=torch.Generator().manual_seed(seed), **call).frames[0]
            judged, first, judged_short = (judge_clip(long, text), judge_clip(long[:16], text),
                                           judge_clip(short, text))
            at_joins, elsewhere = seam_ratio(long, STRIDE, max_frames)
            rows.append({"caption": text, "seed": seed, "seconds": round(seconds, 1), **per_frame(judged, combo),
                         "first16_direction_ok": first["direction_ok"], "first16_direction": first["direction"],
                         "flicker": judged["flicker"], "flicker_16": judged_short["flicker"],
                         "change_at_joins": at_joins, "change_elsewhere": elsewhere,
                         "edge": edge_behaviour(judged, combo[2], long.shape[1])})
            print(json.dumps(rows[-1]), flush=True)
    summary = {"clips": len(rows), "frames": args.frames, "context_length": max_frames, "context_stride": STRIDE,
               **{key: mean(rows, key) for key in ("colour_frames", "shape_frames", "single_frames",
                                                    "first16_direction_ok", "flicker", "flicker_16",
                                                    "change_at_joins", "change_elsewhere", "seconds")}}
    summary["seam_ratio"] = summary["change_at_joins"] / summary["change_elsewhere"]
    summary["flicker_ratio"] = summary["flicker"] / summary["flicker_16"]
    summary["clips_colour_95"] = float(np.mean([r["colour_frames"] >= 0.95 for r in rows]))
    summary["clips_shape_95"] = float(np.mean([r["shape_frames"] >= 0.95 for r in rows]))
    summary["clips_single_95"] = float(np.mean([r["single_frames"] >= 0.95 for r in rows]))
    md = table(["clips", "colour (frames)", "shape (frames)", "one object (frames)", "first 16 move the prompt's way",
                "change at joins / elsewhere", "flicker 128 / 16 frames", "s per clip"],
               [[len(rows), pct(summary["colour_frames"]), pct(summary["shape_frames"]), pct(summary["single_frames"]),
                 pct(summary["first16_direction_ok"]),
                 f"{summary['change_at_joins']:.4f} / {summary['change_elsewhere']:.4f} = {summary['seam_ratio']:.2f}",
                 f"{summary['flicker']:.4f} / {summary['flicker_16']:.4f} = {summary['flicker_ratio']:.2f}",
                 f"{summary['seconds']:.0f}"]])
    md += "\nPer clip, the object's distance (frame sides) from the edge it moves towards:\n\n" + table(
        ["caption", "seed", "frame 0", "15", "31", "63", str(args.frames - 1), "closest", "reached at",
         "backed off after", "frames without it after"],
        [[r["caption"], r["seed"], r["edge"]["gap_0"], r["edge"]["gap_15"], r["edge"]["gap_31"], r["edge"]["gap_63"],
          r["edge"][f"gap_{args.frames - 1}"], r["edge"]["closest_gap"], r["edge"]["reached_at"],
          r["edge"]["backed_off_after"], r["edge"]["missing_frames_after"]] for r in rows])
    return {"summary": summary, "clips": rows, "markdown": md}


# ---------------------------------------------------------------------------------------------------------------
# 2. Image to video
# ---------------------------------------------------------------------------------------------------------------


def run_animate(args, model: Path) -> dict:
    pipe = load(model, stages=("interpolation",))
    factor = pipe.settings["interpolation"].default
    rows = []
    for method in args.methods:
        for i, combo in enumerate(HELD_OUT):
            for k in range(args.clips_per_combo):
                seed = eval_seed(args.seed, i, k)
                first = render_clip(*combo, num_frames=16, size=64, seed=seed)[0]
                text = caption(*combo)
                start = time.perf_counter()
                out = pipe(text, image=first, image_method=method, num_frames=16, num_inference_steps=args.steps,
                           upscale=1, generator=torch.Generator().manual_seed(seed)).frames[0]
                seconds = time.perf_counter() - start
                assert np.array_equal(out[0], first)
                judged, base = judge_clip(out, text), judge_clip(out[::factor], text)  # known frames come back as made
                rows.append({"method": method, "caption": text, "seed": seed, "seconds": round(seconds, 1),
                             "direction_ok": judged["direction_ok"], "direction": judged["direction"],
                             "colour_ok": judged["colour_ok"], "shape_ok": judged["shape_ok"],
                             **per_frame(judged, combo),
                             "frame1_shift": shift(judged["centroids"][0], judged["centroids"][1]),
                             "base_frame1_shift": shift(base["centroids"][0], base["centroids"][1])})
                print(json.dumps(rows[-1]), flush=True)
    summary, lines = {}, []
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        s = {key: mean(mine, key) for key in ("direction_ok", "colour_ok", "shape_ok", "colour_frames", "shape_frames",
                                              "single_frames", "seconds")}
        s["frame1_within_3px"] = float(np.mean([(r["frame1_shift"] or 99) <= 3 for r in mine]))
        s["base_frame1_within_3px"] = float(np.mean([(r["base_frame1_shift"] or 99) <= 3 for r in mine]))
        s["base_frame1_shift_max"] = max(r["base_frame1_shift"] or 99 for r in mine)
        summary[method] = s
        lines.append([method, len(mine), pct(s["direction_ok"]), pct(s["colour_ok"]), pct(s["shape_ok"]),
                      pct(s["colour_frames"]), pct(s["shape_frames"]), pct(s["single_frames"]),
                      pct(s["frame1_within_3px"]), pct(s["base_frame1_within_3px"]),
                      f"{s['base_frame1_shift_max']:.1f}", f"{s['seconds']:.0f}"])
    md = table(["method", "clips", "moves the prompt's way", "colour (clip)", "shape (clip)", "colour (frames)",
                "shape (frames)", "one object (frames)", f"frame 1 within 3 px (x{factor} output)",
                "base frame 1 within 3 px", "base frame 1 max shift (px)", "s per clip"], lines)
    return {"summary": summary, "clips": rows, "markdown": md, "interpolate": factor}


# ---------------------------------------------------------------------------------------------------------------
# 3. Video to video
# ---------------------------------------------------------------------------------------------------------------


def run_restyle(args, model: Path) -> dict:
    pipe = load(model)
    rows = []
    for strength in args.strengths:
        for k in range(args.clips):
            seed = eval_seed(args.seed, 100, k)
            source = render_clip("red", "circle", "right", num_frames=16, size=64, seed=seed)
            out = pipe("a blue circle moving right", video=source, strength=strength, num_inference_steps=args.steps,
                       interpolate=1, upscale=1, generator=torch.Generator().manual_seed(seed)).frames[0]
            judged, src = judge_clip(out, "a blue circle moving right"), judge_clip(source)
            track = [shift(a, b) for a, b in zip(judged["centroids"], src["centroids"])]
            rows.append({"strength": strength, "seed": seed, "colour": judged["colour"],
                         "colour_ok": judged["colour_ok"], "direction_ok": judged["direction_ok"],
                         "shape_ok": judged["shape_ok"], "single_frames": judged["single_object_fraction"],
                         "track_mean_px": float(np.mean([d if d is not None else 99 for d in track])),
                         "track_max_px": float(max(d if d is not None else 99 for d in track))})
            print(json.dumps(rows[-1]), flush=True)
    summary, lines = {}, []
    for strength in args.strengths:
        mine = [r for r in rows if r["strength"] == strength]
        s = {key: mean(mine, key) for key in ("colour_ok", "direction_ok", "shape_ok", "single_frames",
                                              "track_mean_px")}
        s["track_mean_within_3px"] = float(np.mean([r["track_mean_px"] <= 3 for r in mine]))
        s["track_max_within_3px"] = float(np.mean([r["track_max_px"] <= 3 for r in mine]))
        summary[str(strength)] = s
        lines.append([strength, len(mine), pct(s["colour_ok"]), pct(s["direction_ok"]), pct(s["shape_ok"]),
                      pct(s["single_frames"]), f"{s['track_mean_px']:.2f}", pct(s["track_mean_within_3px"]),
                      pct(s["track_max_within_3px"])])
    md = table(["strength", "clips", "colour blue", "direction kept", "shape kept", "one object (frames)",
                "track: mean distance (px)", "clips with mean distance <= 3 px", "clips with every frame <= 3 px"],
               lines)
    return {"summary": summary, "clips": rows, "markdown": md}


# ---------------------------------------------------------------------------------------------------------------
# 4. Prompt travel
# ---------------------------------------------------------------------------------------------------------------


def travel_pairs(count: int) -> list[tuple[str, str]]:
    """The issue's pair first, then held-out combinations changing colour at frame 24."""
    pairs = [("a red circle moving right", "a blue circle moving right")]
    colours = list(COLOURS)
    for colour, shape, direction in HELD_OUT:
        other = colours[(colours.index(colour) + 3) % len(colours)]
        pairs.append((caption(colour, shape, direction), caption(other, shape, direction)))
    return [pairs[0]] * (count - len(pairs) + 1) + pairs[1:] if count >= len(pairs) else pairs[:count]


def run_travel(args, model: Path) -> dict:
    pipe = load(model)
    max_frames = component_config(model, "unet")["max_frames"]
    pipe.enable_free_noise(context_length=max_frames, context_stride=STRIDE)
    rows = []
    for k, (before, after) in enumerate(travel_pairs(args.clips)):
        seed = eval_seed(args.seed, 200, k)
        out = pipe({0: before, args.change: after}, num_frames=args.frames, num_inference_steps=args.steps,
                   interpolate=1, upscale=1, generator=torch.Generator().manual_seed(seed)).frames[0]
        start, end = judge_clip(out[:8], before), judge_clip(out[args.change:], after)
        whole = judge_clip(out)
        rows.append({"before": before, "after": after, "seed": seed, "colour_before": start["colour"],
                     "colour_after": end["colour"], "before_ok": start["colour_ok"], "after_ok": end["colour_ok"],
                     "both_ok": start["colour_ok"] and end["colour_ok"],
                     "frame_colours": whole["frame_colours"], "single_frames": whole["single_object_fraction"],
                     "object_in_every_frame": all(n >= 1 for n in whole["object_count"])})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "frame_colours"}), flush=True)
    summary = {key: mean(rows, key) for key in ("before_ok", "after_ok", "both_ok", "single_frames",
                                                "object_in_every_frame")}
    md = table(["clips", "frames", "change at", "colour of frames 0-7 = first prompt's",
                f"colour of frames {args.change}-{args.frames - 1} = second prompt's", "both", "one object (frames)",
                "an object in every frame"],
               [[len(rows), args.frames, args.change, pct(summary["before_ok"]), pct(summary["after_ok"]),
                 pct(summary["both_ok"]), pct(summary["single_frames"]), pct(summary["object_in_every_frame"])]])
    md += "\nColour read per frame (first letters), clip by clip:\n\n```\n" + "\n".join(
        f"{r['before'][2:]} -> {r['after'][2:]}: " + "".join((c or "-")[0] for c in r["frame_colours"])
        for r in rows) + "\n```\n"
    return {"summary": summary, "clips": rows, "markdown": md}


PARTS = {"long": run_long, "animate": run_animate, "restyle": run_restyle, "travel": run_travel}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=PARTS)
    parser.add_argument("--model", help="cascade folder (default: the shipped model)")
    parser.add_argument("--out", default="docs/long-clips")
    parser.add_argument("--clips-per-combo", type=int, default=2, help="long, animate: clips per held-out combination")
    parser.add_argument("--clips", type=int, default=8, help="restyle (per strength), travel: clips")
    parser.add_argument("--frames", type=int, help="long: 128; travel: 32")
    parser.add_argument("--change", type=int, default=24, help="travel: the frame of the second prompt")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--methods", nargs="+", default=["guided", "masked"], help="animate: image methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.frames = args.frames or {"long": 128, "travel": 32}.get(args.part)
    model = Path(args.model) if args.model else default_model()
    start = time.perf_counter()
    result = PARTS[args.part](args, model)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    settings.update(model=str(model), torch=torch.__version__, seconds=round(time.perf_counter() - start, 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{args.part}.json", json.dumps({"settings": settings, **result}, indent=1) + "\n")
    command = "python scripts/eval_long.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_text(out / f"{args.part}.md", f"`{command}` ({settings['seconds']:.0f} s, {args.threads} thread(s), "
               f"torch {torch.__version__})\n\n" + result["markdown"])
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
