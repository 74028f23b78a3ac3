"""`vidiff inflate`: a Stable Diffusion model in, a video model folder out."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
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
    p.add_argument("--motion-adapter", help="AnimateDiff motion modules to load into the temporal attention: a "
                   "diffusers MotionAdapter folder, or an original .safetensors/.ckpt (loaded weights-only)")
    p.add_argument("--max-frames", type=int, help="longest clip the model accepts (default 32, or the adapter's)")
    p.add_argument("--temporal-heads", type=int, help="heads of each temporal attention (default 8, or the adapter's)")
    p.add_argument("--no-temporal-conv", action="store_true", help="leave out the temporal convolutions")
    p.add_argument("--no-temporal-attention", action="store_true", help="leave out the temporal attention")
    p.add_argument("--no-motion-mid-block", action="store_true", help="no temporal attention in the mid block")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (only once complete)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidiff.models.inflate_folder import inflate_model_folder

    options = {
        "max_frames": args.max_frames,
        "temporal_conv": False if args.no_temporal_conv else None,
        "temporal_attention": False if args.no_temporal_attention else None,
        "temporal_num_attention_heads": args.temporal_heads,
        "motion_mid_block": False if args.no_motion_mid_block else None,
    }
    options = {k: v for k, v in options.items() if v is not None}  # unset: the defaults, or the adapter's
    out = inflate_model_folder(args.base, args.out, config=args.config, overwrite=args.overwrite,
                               motion_adapter=args.motion_adapter, **options)
    print(f"wrote video model to {out}")
    return 0
