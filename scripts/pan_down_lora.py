"""A "pan down" MotionLoRA for the shipped default model, trained and measured on the shapes world.

    python scripts/pan_down_lora.py --work outputs/pan-down [--threads 1] [--resume] [--ship] [key=value ...]

1. clips: every training colour-shape-direction combination's caption, over a clip of that object moving down
   (`--clips-per-combo` each; combinations whose down clip is held out are left out, so no held-out clip is seen);
2. train: `vidiff train` with configs/train/pan_down_lora.yaml (a rank-8 MotionLoRA) on the default model
   -> WORK/run/lora.safetensors;
3. measure: prompts of every combination whose direction is left, right or up (`--eval-clips` clips each, noise
   seeded as `vidiff eval` seeds it, the default's sampling settings), judged by vidiff eval's judge, with the LoRA
   at scale 1.0 and unloaded -> WORK/eval.json: the share of clips that move down, and colour, shape and one
   object per frame against the caption;
4. `--ship`: copy the LoRA to vidiff/assets/examples/pan-down-lora.safetensors with the figures beside it.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from vidiff.atomic import write_text
from vidiff.config import TrainConfig, load_config
from vidiff.data.shapes import ALL_COMBOS, HELD_OUT, caption, clip_seed, combinations, render_clip
from vidiff.eval.judge import judge_clip
from vidiff.eval.run import eval_seed
from vidiff.io.video import write_video
from vidiff.pipelines.text_to_video import TextToVideoPipeline
from vidiff.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "vidiff" / "assets" / "default-model"
CONFIG = ROOT / "configs" / "train" / "pan_down_lora.yaml"
SHIPPED = ROOT / "vidiff" / "assets" / "examples" / "pan-down-lora.safetensors"
TARGETS = {"down": 0.9, "colour": 0.95, "shape": 0.9, "single_object": 0.95}  # with the LoRA at 1.0
BASE_DOWN_MAX = 0.1  # share of down clips without it


def write_clips(folder: Path, per_combo: int, seed: int = 1) -> int:
    """Clips of objects moving down, captioned with the direction of a training combination."""
    combos = [(c, s, d) for c, s, d in combinations("train") if (c, s, "down") not in HELD_OUT]
    index = 0
    for colour, shape, direction in combos:
        for _ in range(per_combo):
            path = folder / f"clip_{index:05d}.mp4"
            write_video(render_clip(colour, shape, "down", num_frames=16, size=64, seed=clip_seed(seed, index)),
                        path, fps=8)
            path.with_suffix(".txt").write_text(caption(colour, shape, direction) + "\n")
            index += 1
    (folder / "done").write_text(f"{index}\n")
    return index


def measure(pipe: TextToVideoPipeline, clips_per_combo: int, steps: int, guidance: float, batch_size: int,
            seed: int = 0) -> dict:
    """Judge clips of every left / right / up combination; clip (c, k) from noise seeded eval_seed(seed, c, k)."""
    items = [(ALL_COMBOS.index(combo), k) for combo in ALL_COMBOS if combo[2] != "down" for k in range(clips_per_combo)]
    judged, start = [], time.perf_counter()
    for first in range(0, len(items), batch_size):
        batch = items[first : first + batch_size]
        captions = [caption(*ALL_COMBOS[c]) for c, _ in batch]
        generators = [torch.Generator().manual_seed(eval_seed(seed, c, k)) for c, k in batch]
        frames = pipe(captions, num_frames=16, num_inference_steps=steps, guidance_scale=guidance,
                      generator=generators, output_type="np", show_progress=False).frames
        judged += [judge_clip(clip, text) for clip, text in zip(frames, captions)]
        print(f"judged {len(judged)}/{len(items)} clips, {sum(r['direction'] == 'down' for r in judged)} down",
              flush=True)
    return {
        "clips": len(judged),
        "down": float(np.mean([r["direction"] == "down" for r in judged])),
        "caption_direction": float(np.mean([r["direction_ok"] for r in judged])),
        "colour": float(np.mean([r["colour_ok"] for r in judged])),
        "shape": float(np.mean([r["shape_ok"] for r in judged])),
        "single_object": float(np.mean([r["single_ok"] for r in judged])),
        "directions": {d: int(sum(r["direction"] == d for r in judged)) for d in ("left", "right", "up", "down",
                                                                                   "none")},
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="outputs/pan-down")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--clips-per-combo", type=int, default=4)
    parser.add_argument("--eval-clips", type=int, default=2, help="clips per left / right / up combination")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--ship", action="store_true", help="copy the LoRA and its figures into vidiff/assets")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)

    # 1. Clips
    clips = work / "clips"
    if not (clips / "done").is_file():
        clips.mkdir(parents=True, exist_ok=True)
        print(f"wrote {write_clips(clips, args.clips_per_combo)} clips")

    # 2. Train
    run = work / "run"
    if not (run / "lora.safetensors").is_file():
        config = load_config(TrainConfig, CONFIG, [f"model={args.model}", f"data={clips}", f"output={run}",
                                                   *args.overrides])
        print(train(config, resume=args.resume and (run / "checkpoints").is_dir()))

    # 3. Measure, with the default's own sampling settings
    sampling = json.loads((Path(args.model) / "sampling.json").read_text())
    settings = dict(clips_per_combo=args.eval_clips, steps=25, guidance=sampling["guidance"], batch_size=8)
    pipe = TextToVideoPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(run / "lora.safetensors", adapter_name="pan-down")
    pipe.set_adapters("pan-down", 1.0)
    with_lora = measure(pipe, **settings)
    pipe.unload_lora_weights()
    without = measure(pipe, **settings)
    passed = all(with_lora[k] >= v for k, v in TARGETS.items()) and without["down"] <= BASE_DOWN_MAX
    report = {"settings": settings, "lora_1.0": with_lora, "unloaded": without, "targets": TARGETS,
              "unloaded_down_max": BASE_DOWN_MAX, "passed": passed,
              "train_summary": json.loads((run / "train_summary.json").read_text())}
    write_text(work / "eval.json", json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("lora_1.0", "unloaded", "passed")}, indent=2))

    # 4. Ship
    if args.ship:
        SHIPPED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "lora.safetensors", SHIPPED)
        write_text(SHIPPED.with_suffix(".json"), json.dumps(
            {"recipe": f"python scripts/pan_down_lora.py {' '.join(argv or [])}".strip(), **report}, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
