"""FLOPs of one denoising step of the video U-Net at SD 1.5 size, counted on the meta device (no weights, no GPU).

    python scripts/count_flops.py [--frames 16] [--size 512] [--batch 2]

batch 2 = classifier-free guidance (unconditional + conditional halves in one batch). Counts matrix multiplies,
convolutions and attention with torch's FlopCounterMode (2 FLOPs per multiply-add).
"""

import argparse

import torch
from diffusers import UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from vidiff import inflate_unet
from vidiff.testing.configs import SD15_UNET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    with torch.device("meta"):
        rows = []
        for name, options in [("vidiff (temporal conv + attention)", {}),
                              ("vidiff, temporal attention only (= AnimateDiff's work)", {"temporal_conv": False}),
                              ("spatial layers only (no temporal layers)", {"temporal_conv": False,
                                                                            "temporal_attention": False})]:
            video = inflate_unet(UNet2DConditionModel(**SD15_UNET), **options)
            latents = torch.randn(args.batch, 4, args.frames, args.size // 8, args.size // 8)
            text = torch.randn(args.batch, 77, 768)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                video(latents, torch.tensor([500] * args.batch), text)
            rows.append((name, counter.get_total_flops()))
    print(f"SD 1.5 U-Net step, batch {args.batch} x {args.frames} frames x {args.size}x{args.size}:")
    for name, flops in rows:
        print(f"  {name}: {flops / 1e12:.2f} TFLOP")


if __name__ == "__main__":
    main()
