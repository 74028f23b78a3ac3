"""Training throughput with and without the latent cache (tiny random SD-layout model, shapes clips, CPU).

    python scripts/bench_train.py [--steps 20] [--clips 16] [--frames 16] [--size 64] [--batch 2] [--threads 1]
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch

from vidiff.config import TrainConfig
from vidiff.data.shapes import write_shapes_folder
from vidiff.models.inflate import inflate_model_folder
from vidiff.tiny import make_tiny_sd
from vidiff.training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="vidiff-bench-train-"))
    write_shapes_folder(work / "clips", num_clips=args.clips, num_frames=args.frames, size=args.size)
    model = inflate_model_folder(make_tiny_sd(work / "sd"), work / "video", max_frames=max(16, args.frames))
    for cache in (False, True):
        config = TrainConfig(model=str(model), data=str(work / "clips"), output=str(work / f"run-{cache}"),
                             num_frames=args.frames, frame_stride=1, resolution=args.size, batch_size=args.batch,
                             max_steps=args.steps, checkpoint_every=10**6, log_every=5, cache_latents=cache)
        summary = train(config)
        print(json.dumps({"cache_latents": cache, "frames_per_second": round(summary["frames_per_second"], 1),
                          "seconds": round(summary["seconds"], 1)}))


if __name__ == "__main__":
    main()
