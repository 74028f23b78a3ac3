"""`vidiff train`: fine-tune a video model on a folder of videos."""

from __future__ import annotations

import argparse
import json
import sys

from vidiff.cli.common import LIBRARIES
from vidiff.process import import_quickly


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a video model on a folder of videos",
        description="Train the temporal layers (by default) of a video model on a folder of videos, captioned "
        "or not. Settings come from a YAML config; `key=value` arguments override it, with the config's key names "
        "(e.g. model=DIR data=DIR output=DIR max_steps=500 num_frames=16 resolution=256 batch_size=1 "
        "checkpoint_every=100 seed=0). Runs the same under `accelerate launch` on many GPUs or machines.",
    )
    p.add_argument("--config", help="YAML run config, e.g. configs/train/temporal.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config settings")
    p.add_argument("--resume", nargs="?", const="latest", help="resume from the newest checkpoint in the output "
                   "folder, or from the checkpoint folder given. Settings that change what the run computes must stay "
                   "as they were; max_steps, checkpointing, logging and validation may change (recorded in "
                   "history.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="start over in an output folder that holds a run "
                   "(removes what that run wrote there)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidiff.config import TrainConfig, load_config

    config = load_config(TrainConfig, args.config, args.overrides)
    config.check()
    import_quickly(LIBRARIES)
    from vidiff.training.trainer import TrainingDiverged, train

    try:
        summary = train(config, resume=args.resume or False, overwrite=args.overwrite)
    except TrainingDiverged as error:  # a runtime failure, but one with a clear cause: no traceback
        print(f"vidiff train: {error}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("steps", "final_loss", "frames_per_second")}
                     | {"skipped_files": len(summary["skipped_files"])}, indent=2))
    return 0
