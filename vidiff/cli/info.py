"""`vidiff info`: describe a video model folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidiff.errors import VidiffInputError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info",
        help="describe a video model folder",
        description="Print a video model's settings and parameter counts as JSON.",
    )
    p.add_argument("model", help="video model folder (or its unet/ folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidiff.model_folder import read_json
    from vidiff.models.temporal import TemporalAttention, TemporalConv
    from vidiff.models.video_unet import VideoUNet
    from vidiff.weights import loading

    folder = Path(args.model)
    unet_folder = folder / "unet" if (folder / "unet").is_dir() else folder
    if not (unet_folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a vidiff model folder (no unet/config.json)")
    if read_json(unet_folder / "config.json").get("_class_name") != "VideoUNet":
        raise VidiffInputError(f"{unet_folder} holds no VideoUNet; make one with `vidiff inflate`")
    with loading(unet_folder):
        unet = VideoUNet.from_pretrained(unet_folder)

    def count(types) -> int:
        return sum(p.numel() for m in unet.modules() if isinstance(m, types) for p in m.parameters())

    info = {
        "model": str(folder),
        "max_frames": unet.config.max_frames,
        "in_channels": unet.unet.config.in_channels,
        "spatial_parameters": sum(p.numel() for p in unet.unet.parameters()),
        "temporal_conv_parameters": count(TemporalConv),
        "temporal_attention_parameters": count(TemporalAttention),
        "components": sorted(p.name for p in folder.iterdir() if p.is_dir()) if unet_folder != folder else [],
    }
    from vidiff.pipelines.cascade import STAGE_SETTING, read_cascade

    stages = read_cascade(folder) if unet_folder != folder else {}
    if stages:  # a cascade: what each later stage does by default
        info["cascade"] = {name: {"path": str(stage.path), STAGE_SETTING[name]: stage.default, **stage.sampling}
                           for name, stage in stages.items()}
    print(json.dumps(info, indent=2))
    return 0
