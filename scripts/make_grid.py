"""The README picture: a looping GIF grid of clips from the default model, seen and held-out prompts.

    python scripts/make_grid.py [--model DIR] [--out docs/grid.gif] [--seed 0]

Top row: captions whose colour-shape-direction combination was in training. Bottom row: held-out combinations,
never trained on. Each tile is one clip, enlarged 2x (nearest neighbour), with its caption beneath.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from vidiff.data.shapes import caption, combinations
from vidiff.io.video import write_video
from vidiff.model_folder import default_model, recommended_guidance
from vidiff.pipelines.text_to_video import TextToVideoPipeline

SEEN = [("red", "circle", "right"), ("blue", "square", "up"), ("green", "triangle", "left"),
        ("yellow", "circle", "down")]
ZOOM, LABEL = 2, 26  # tile enlargement, label strip height in pixels


def label_strip(text: str, width: int, held_out: bool) -> np.ndarray:
    """Two lines of white text on black: 'colour shape' and 'moving direction' (+ 'held out')."""
    words = text.split()  # a {colour} {shape} moving {direction}
    image = Image.new("RGB", (width, LABEL))
    draw = ImageDraw.Draw(image)
    draw.text((3, 1), f"{words[1]} {words[2]}", fill=(255, 255, 255))
    draw.text((3, 13), f"{words[4]}" + (" (held out)" if held_out else ""), fill=(255, 200, 80) if held_out
              else (200, 200, 200))
    return np.asarray(image)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="video model folder (default: the shipped model)")
    parser.add_argument("--out", type=Path, default=Path("docs/grid.gif"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args(argv)
    model = args.model or default_model()

    rows = [(SEEN, False), (combinations("heldout")[:len(SEEN)], True)]
    pipe = TextToVideoPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    guidance = recommended_guidance(model)
    grid_rows = []
    for combos, held_out in rows:
        prompts = [caption(*combo) for combo in combos]
        generators = [torch.Generator().manual_seed(args.seed + k) for k in range(len(prompts))]
        clips = pipe(prompts, num_frames=16, num_inference_steps=args.steps, guidance_scale=guidance,
                     generator=generators).frames  # (n, f, h, w, 3) uint8
        clips = clips.repeat(ZOOM, axis=2).repeat(ZOOM, axis=3)
        tiles = []
        for clip, prompt in zip(clips, prompts):
            strip = np.broadcast_to(label_strip(prompt, clip.shape[2], held_out), (len(clip), LABEL, clip.shape[2], 3))
            tiles.append(np.concatenate([clip, strip], axis=1))  # (f, h + LABEL, w, 3)
        grid_rows.append(np.concatenate([np.pad(t, ((0, 0), (0, 2), (0, 2), (0, 0)), constant_values=40)
                                         for t in tiles], axis=2))
    grid = np.ascontiguousarray(np.concatenate(grid_rows, axis=1))
    write_video(grid, args.out, fps=8, overwrite=True)  # the README picture, remade in place
    print(f"wrote {args.out} ({grid.shape[2]}x{grid.shape[1]}, {len(grid)} frames, guidance {guidance})")
    return args.out


if __name__ == "__main__":
    main()
