"""Tiny Stable-Diffusion-shaped models built from nothing, for tests, examples and the CPU default.

No weights can be downloaded here, so everything is built from configs: a byte-level CLIP tokenizer (the real
CLIP BPE with no merges: every character is a token), a small CLIP text encoder, a 4-block (8x) VAE, the SD 1.5
U-Net layout at a small width, and SD's DDIM scheduler settings. The folder is a standard diffusers
`StableDiffusionPipeline` folder, so it is loaded by exactly the code that loads real Stable Diffusion.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import torch

from vidiff.testing.configs import SD15_UNET, scaled

MAX_TOKENS = 77  # CLIP's context length


@contextlib.contextmanager
def seeded(seed: int):
    """Build modules from `seed` without touching the caller's random state: torch's global generator is forked,
    seeded for the block, and restored after it (module constructors draw their initial weights from it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def byte_level_vocab() -> dict[str, int]:
    """CLIP's byte-to-unicode alphabet, each symbol alone and word-final, plus the two special tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable + [256 + n for n in range(256 - len(printable))]
    symbols = [chr(c) for c in codes]
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def make_tokenizer():
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab.write_text(json.dumps(byte_level_vocab()))
        merges.write_text("#version: 0.2\n")
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=MAX_TOKENS)


def make_text_encoder(tokenizer, width: int = 32, layers: int = 2, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=width * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with seeded(seed):
        return CLIPTextModel(config).eval()


def make_vae(width: int = 32, seed: int = 0):
    """A 4-block AutoencoderKL: the 8x downscale of SD's VAE (fewer blocks make CPU sampling far slower)."""
    from diffusers import AutoencoderKL

    with seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=[width // 2, width, width, width],
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
            scaling_factor=0.18215,
        ).eval()


def make_scheduler():
    """DDIM with Stable Diffusion's training noise schedule."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def make_unet2d(width: int = 32, cross_attention_dim: int = 32, seed: int = 0, **overrides):
    from diffusers import UNet2DConditionModel

    config = {**scaled(SD15_UNET, width=width, cross_attention_dim=cross_attention_dim), **overrides}
    with seeded(seed):
        return UNet2DConditionModel(**config).eval()


def make_tiny_sd(folder: str | os.PathLike, width: int = 32, seed: int = 0) -> Path:
    """Write a tiny text-to-image Stable Diffusion folder (diffusers layout, random weights) and return its path."""
    from diffusers import StableDiffusionPipeline

    tokenizer = make_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=make_vae(seed=seed),
        text_encoder=make_text_encoder(tokenizer, width=width, seed=seed),
        tokenizer=tokenizer,
        unet=make_unet2d(width=width, cross_attention_dim=width, seed=seed),
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def make_tiny_upscaler(folder: str | os.PathLike, width: int = 32, seed: int = 0, vae_blocks: int = 3,
                       in_channels: int = 7, vae=None, text_encoder=None, tokenizer=None) -> Path:
    """Write a tiny Stable Diffusion x4-upscaler folder (diffusers' StableDiffusionUpscalePipeline layout, random
    weights): the x4 upscaler's U-Net layout at `width`, a `vae_blocks`-block VAE (3: 4x, as the real one), DDIM
    sampling and the DDPM low-res noise schedule. `in_channels` 4 + 3 r^2 folds larger low-res frames (vidiff)."""
    from diffusers import AutoencoderKL, StableDiffusionUpscalePipeline, UNet2DConditionModel

    from vidiff.pipelines.upscale import default_low_res_scheduler
    from vidiff.testing.configs import X4_UPSCALER_UNET

    tokenizer = tokenizer or make_tokenizer()
    text_encoder = text_encoder or make_text_encoder(tokenizer, width=width, seed=seed)
    if vae is None:
        with seeded(seed):
            vae = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * vae_blocks,
                                up_block_types=["UpDecoderBlock2D"] * vae_blocks,
                                block_out_channels=[width // 2] + [width] * (vae_blocks - 1), layers_per_block=1,
                                latent_channels=4, norm_num_groups=8, scaling_factor=0.08333,
                                mid_block_add_attention=vae_blocks > 2).eval()
    config = {**scaled(X4_UPSCALER_UNET, width=width, cross_attention_dim=text_encoder.config.hidden_size),
              "in_channels": in_channels, "out_channels": vae.config.latent_channels}
    with seeded(seed):
        unet = UNet2DConditionModel(**config).eval()
    with torch.no_grad():  # diffusers zero-initialises conv_out; random, so that outputs carry signal
        unet.conv_out.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed))
    pipe = StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=make_scheduler(),
        low_res_scheduler=default_low_res_scheduler(), max_noise_level=350,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
