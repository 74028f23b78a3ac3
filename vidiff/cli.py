"""The `vidiff` command line. It only parses arguments and calls the library.

Exit codes: 0 success; 2 bad input (one line on stderr naming the problem, no traceback); 1 runtime failure.
Heavy imports (torch, diffusers) happen inside the commands, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Errors that mean "the input is wrong": reported in one line with exit code 2.
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def cmd_inflate(args: argparse.Namespace) -> int:
    from vidiff.models.inflate import inflate_model_folder

    options = {
        "max_frames": args.max_frames,
        "temporal_conv": not args.no_temporal_conv,
        "temporal_attention": not args.no_temporal_attention,
        "temporal_num_attention_heads": args.temporal_heads,
        "motion_mid_block": not args.no_motion_mid_block,
    }
    out = inflate_model_folder(args.base, args.out, config=args.config, overwrite=args.overwrite, **options)
    print(f"wrote video model to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from vidiff.models.temporal import TemporalAttention, TemporalConv
    from vidiff.models.video_unet import VideoUNet

    folder = Path(args.model)
    unet_folder = folder / "unet" if (folder / "unet").is_dir() else folder
    if not (unet_folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a vidiff model folder (no unet/config.json)")
    if json.loads((unet_folder / "config.json").read_text()).get("_class_name") != "VideoUNet":
        raise ValueError(f"{unet_folder} holds no VideoUNet; make one with `vidiff inflate`")
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
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidiff",
        description="Turn a text-to-image latent diffusion model (Stable Diffusion 1.x/2.x, diffusers layout) "
        "into a video model, and use it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "inflate",
        help="add temporal layers to a Stable Diffusion model, writing a video model folder",
        description="Copy a Stable Diffusion model's U-Net into a video U-Net with temporal convolutions and "
        "temporal attention after its spatial layers (identity at start, so it first reproduces the image model "
        "frame by frame), and write a complete video model folder (unet/ vae/ text_encoder/ tokenizer/ "
        "scheduler/).",
    )
    p.add_argument("--base", required=True, help="Stable Diffusion diffusers folder, or a single-file .safetensors")
    p.add_argument("--out", required=True, help="video model folder to write (must not exist unless --overwrite)")
    p.add_argument("--config", help="for a single-file base: local diffusers folder with the matching configs")
    p.add_argument("--max-frames", type=int, default=32, help="longest clip the model accepts (default 32)")
    p.add_argument("--temporal-heads", type=int, default=8, help="heads of each temporal attention (default 8)")
    p.add_argument("--no-temporal-conv", action="store_true", help="leave out the temporal convolutions")
    p.add_argument("--no-temporal-attention", action="store_true", help="leave out the temporal attention")
    p.add_argument("--no-motion-mid-block", action="store_true", help="no temporal attention in the mid block")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (only once complete)")
    p.set_defaults(func=cmd_inflate)

    p = sub.add_parser(
        "info",
        help="describe a video model folder",
        description="Print a video model's settings and parameter counts as JSON.",
    )
    p.add_argument("model", help="video model folder (or its unet/ folder)")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except INPUT_ERRORS as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"vidiff {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vidiff {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
