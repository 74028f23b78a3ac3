"""Stage 3 of the tiny default model: shapes clips -> inflate the tiny image model -> `vidiff train` temporal layers.

    python scripts/tiny_default/train_temporal.py --image-model outputs/tiny-default/image-model \
        --work outputs/tiny-default [--clips 1520] [--steps 1500] [--resume]

Exactly what a user does with a real Stable Diffusion: inflate it, then train its temporal layers on a folder of
videos through the public trainer. Only training combinations are written; held-out ones never are.
"""

import argparse
from pathlib import Path

import torch

from vidiff.config import TrainConfig, load_config
from vidiff.data.shapes import write_shapes_folder
from vidiff.models.inflate import inflate_model_folder
from vidiff.training.trainer import train

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "tiny_default_temporal.yaml"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-model", required=True)
    parser.add_argument("--work", default="outputs/tiny-default")
    parser.add_argument("--clips", type=int, default=1520, help="training clips to render (20 per combination)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)

    clips = work / "clips"
    if not (clips / "done").is_file():
        write_shapes_folder(clips, num_clips=args.clips, num_frames=16, size=64, split="train", seed=1)
        (clips / "done").write_text("ok\n")
    video_model = work / "video-model-init"
    if not (video_model / "model_index.json").is_file():
        inflate_model_folder(args.image_model, video_model, overwrite=True, max_frames=16,
                             temporal_num_attention_heads=8)
    overrides = [f"model={video_model}", f"data={clips}", f"output={work / 'temporal-run'}", *args.overrides]
    if args.steps:
        overrides.append(f"max_steps={args.steps}")
    config: TrainConfig = load_config(TrainConfig, CONFIG, overrides)
    return train(config, resume=args.resume)


if __name__ == "__main__":
    print(main())
