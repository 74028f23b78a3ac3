"""Stage 5 of the tiny default model: the untrained 2x upscaler that `vidiff train ... task=upscale` then trains.

    python scripts/tiny_default/make_upscaler.py --vae outputs/tiny-default/vae2x --out outputs/tiny-default/upscaler-init

It is Stable Diffusion's x4 upscaler scaled down (diffusers' `StableDiffusionUpscalePipeline` layout): a
`UNet2DConditionModel` reading 4 noisy latent channels + the 3 low-resolution RGB channels (7 in all) with the
noise-augmentation level as its class label (1000 class embeddings), a DDPM low-res noise schedule, and its own VAE.
The x4 upscaler's VAE downsamples 4x so that the low-res frames sit at the latent resolution; this one's 2x VAE
(train_vae.py --blocks 2 --size 128) does the same for a 2x upscaler. Two departures, both for CPU speed, measured:
the U-Net has no spatial attention blocks (at 64x64 latents they made a step 2-3x slower), so its temporal layers
are the temporal convolutions plus the mid block's temporal attention; and the text encoder, tokenizer and
scheduler are the default model's (the stage trains on empty captions). The folder is then inflated by the same
`vidiff inflate` code a user runs on the real x4 upscaler.
"""

import argparse
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionUpscalePipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from vidiff.models.inflate import inflate_model_folder
from vidiff.pipelines.generate import DEFAULT_MODEL_DIR
from vidiff.pipelines.upscale import default_low_res_scheduler
from vidiff.tiny import make_scheduler


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, required=True, help="the upscaler's VAE (train_vae.py --blocks 2)")
    parser.add_argument("--out", type=Path, required=True, help="video model folder to write (inflated)")
    parser.add_argument("--base", type=Path, default=DEFAULT_MODEL_DIR, help="model lending text encoder, tokenizer")
    parser.add_argument("--width", type=int, default=16, help="first block width (default 16)")
    parser.add_argument("--max-frames", type=int, default=8, help="frames per window (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    vae = AutoencoderKL.from_pretrained(args.vae)
    text_encoder = CLIPTextModel.from_pretrained(args.base / "text_encoder")
    torch.manual_seed(args.seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=vae.config.latent_channels + 3, out_channels=vae.config.latent_channels,
        down_block_types=["DownBlock2D"] * 3, up_block_types=["UpBlock2D"] * 3,
        block_out_channels=[args.width, 2 * args.width, 4 * args.width], layers_per_block=1,
        cross_attention_dim=text_encoder.config.hidden_size, attention_head_dim=4, norm_num_groups=8,
        num_class_embeds=1000,
    )
    image = args.out.with_name(args.out.name + "-2d")
    if image.exists():
        shutil.rmtree(image)
    scaling = vae.config.scaling_factor
    StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(args.base / "tokenizer"),
        unet=unet, scheduler=make_scheduler(),
        low_res_scheduler=default_low_res_scheduler(), max_noise_level=350,
    ).save_pretrained(image, safe_serialization=True)
    # diffusers' upscale pipeline forces the x4 VAE's 0.08333 into the config; keep the one train_vae.py measured
    config_path = image / "vae" / "config.json"
    config_path.write_text(config_path.read_text().replace('"scaling_factor": 0.08333', f'"scaling_factor": {scaling}'))
    out = inflate_model_folder(image, args.out, overwrite=True, max_frames=args.max_frames)
    print(f"wrote {out} (2-D source: {image})")
    return out


if __name__ == "__main__":
    main()
