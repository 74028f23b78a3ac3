"""U-Net configs with the real Stable Diffusion layouts, and a width knob for tests and benchmarks.

These are the `unet/config.json` contents of the public checkpoints (diffusers layout), so a model built from
them has the same blocks, heads and embeddings as the real one; `scaled` shrinks widths for CPU tests.
"""

from __future__ import annotations

from typing import Any

SD15_UNET: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
)

# SD 2.x: per-block head *counts* stored in attention_head_dim, linear projections, OpenCLIP-H width.
SD21_UNET: dict[str, Any] = {
    **SD15_UNET,
    "sample_size": 96,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}

# stabilityai/stable-diffusion-x4-upscaler: 4 latent + 3 low-res RGB channels in, noise level as class label.
X4_UPSCALER_UNET: dict[str, Any] = dict(
    sample_size=128,
    in_channels=7,
    out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[256, 512, 512, 1024],
    layers_per_block=2,
    cross_attention_dim=1024,
    attention_head_dim=8,
    norm_num_groups=32,
    act_fn="silu",
    num_class_embeds=1000,
    only_cross_attention=[True, True, True, False],
    use_linear_projection=True,
    upcast_attention=False,
    flip_sin_to_cos=True,
    freq_shift=0,
)

PRESETS = {"sd15": SD15_UNET, "sd21": SD21_UNET, "x4-upscaler": X4_UPSCALER_UNET}


def scaled(config: dict[str, Any], width: int = 32, cross_attention_dim: int = 32, groups: int = 8) -> dict[str, Any]:
    """The same layout at a small width: block widths scaled so the first is `width`, heads kept dividing them."""
    base = config["block_out_channels"][0]
    channels = [width * c // base for c in config["block_out_channels"]]
    heads = config["attention_head_dim"]
    return {
        **config,
        "block_out_channels": channels,
        "cross_attention_dim": cross_attention_dim,
        "norm_num_groups": groups,
        "attention_head_dim": [min(h, 4) for h in heads] if isinstance(heads, list) else min(heads, 4),
        "layers_per_block": 1,
        "sample_size": 8,
    }
