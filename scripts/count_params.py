"""Count the temporal parameters vidiff adds to the real Stable Diffusion U-Net layouts (random weights, CPU).

    python scripts/count_params.py            # all presets
    python scripts/count_params.py sd15
"""

import sys

import torch
from diffusers import UNet2DConditionModel

from vidiff import inflate_unet
from vidiff.testing.configs import PRESETS
from vidiff.models.temporal import TemporalAttention, TemporalConv


def count(model, types=None) -> int:
    if types is None:
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for m in model.modules() if isinstance(m, types) for p in m.parameters())


def main(names: list[str]) -> None:
    print("| U-Net layout | spatial | temporal conv | temporal attention | temporal total | temporal share |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names or list(PRESETS):
        with torch.device("meta"):  # shapes only: the count does not need memory or real weights
            video = inflate_unet(UNet2DConditionModel(**PRESETS[name]))
        spatial, conv, attn = count(video.unet), count(video, TemporalConv), count(video, TemporalAttention)
        print(
            f"| {name} | {spatial / 1e6:.1f} M | {conv / 1e6:.1f} M | {attn / 1e6:.1f} M | "
            f"{(conv + attn) / 1e6:.1f} M | {(conv + attn) / (spatial + conv + attn):.1%} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
