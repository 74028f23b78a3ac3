"""Stage 5 of the tiny default model: the untrained 2x upscaler that `vidiff train ... task=upscale` then trains.

    python scripts/tiny_default/make_upscaler.py --codec 2 --widths 32 48 64 --out outputs/tiny-default/upscaler-init

It is Stable Diffusion's x4 upscaler scaled down (diffusers' `StableDiffusionUpscalePipeline` layout): a
`UNet2DConditionModel` reading the noisy latents + the low-resolution RGB frames with the noise-augmentation level
as its class label (1000 class embeddings), a DDPM low-res noise schedule, and its own autoencoder:
- `--codec 2` (the shipped stage): vidiff's lossless `PixelShuffleCodec`, space-to-depth by 2, so the U-Net works in
  pixel space at the 64-pixel low-res side (12 channels: each position holds the 2x2 high-res pixels over one
  low-res pixel) and reads the low-res frames unfolded (3 channels). The tiny KL VAEs trainable on the CPU
  reconstruct 128-pixel shapes at 17-23 dB, far under bicubic's 35.7 dB, so a latent upscaler behind one could
  never beat bicubic. The first shipped stage used `--codec 8` (16x16 positions of 192 channels, widths 48/64/96)
  and never rose above bicubic, on H.264 or lossless clips alike. The likely cause is width where the edges are:
  48 features per 4x4 block of low-res pixels there, 32 per low-res pixel here (scripts/tiny_default/README.md).
- `--vae DIR`: a trained KL VAE (train_vae.py --blocks 2 --size 128), the x4 upscaler's own arrangement.
Departures from the x4 upscaler, for CPU speed and the package's 30 MB: the U-Net has no spatial attention blocks
(at 64x64 latents they made a step 2-3x slower), so its temporal layers are the temporal convolutions plus the
temporal attention after each ResNet; and the text encoder and tokenizer are the default model's (the stage trains
on empty captions). `--prediction-type sample` (the default) trains the U-Net to predict the clean frames: the loss
is then the pixel MSE that PSNR measures, and few sampling steps suffice because the high-resolution frame is
nearly determined by the low-resolution one. The model is residual (`"residual": true` in model_index.json;
`--no-residual` turns it off): it diffuses the difference between the frames and the bicubic upsample of their
low-res version (SRDiff, Li et al. 2022). Without it, x0 prediction from scratch plateaued at a training loss of
0.024 (21 dB at step 250, against bicubic's 35.9) because the U-Net must first learn the upsampling itself.
The residual is scaled by 32 (`--scaling-factor`), 1 / its standard deviation, as Stable Diffusion scales its
latents to unit variance: unscaled (std 0.03 against unit noise), 900 steps left the loss where it began (0.0011
to 0.0010) and PSNR 0.2 dB above bicubic.
The folder is then inflated by the same `vidiff inflate` code a user
runs on the real x4 upscaler.
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from vidiff.atomic import write_text
from vidiff.model_folder import DEFAULT_MODEL_DIR, read_index, vae_scale_factor
from vidiff.models.inflate_folder import inflate_model_folder
from vidiff.models.pixel_codec import PixelShuffleCodec
from vidiff.pipelines.upscale import default_low_res_scheduler
from vidiff.testing.tiny import make_scheduler


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--codec", type=int, metavar="FACTOR", help="lossless space-to-depth codec by FACTOR (8)")
    source.add_argument("--vae", type=Path, help="a trained KL VAE for the upscaler (train_vae.py --blocks 2)")
    parser.add_argument("--scale", type=int, default=2, help="upscaling factor of one pass (default 2)")
    parser.add_argument("--out", type=Path, required=True, help="video model folder to write (inflated)")
    parser.add_argument("--base", type=Path, default=DEFAULT_MODEL_DIR, help="model lending text encoder, tokenizer")
    parser.add_argument("--widths", type=int, nargs="+", default=[48, 64, 96], help="block widths (48 64 96)")
    parser.add_argument("--max-frames", type=int, default=16, help="frames per window (default 16)")
    parser.add_argument("--prediction-type", choices=("sample", "epsilon", "v_prediction"), default="sample")
    parser.add_argument("--scaling-factor", type=float, default=32.0, help="the codec's latent scale (default 32: "
                        "1 / the 0.0306 std of the bicubic residual on 128-pixel training clips)")
    parser.add_argument("--no-residual", dest="residual", action="store_false", help="diffuse the frames themselves "
                        "rather than their difference from the bicubic upsample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.codec:  # residuals are small (std 0.03 in [-1, 1]); scaled to unit variance as SD scales its latents
        vae = PixelShuffleCodec(factor=args.codec, scaling_factor=args.scaling_factor if args.residual else 1.0)
    else:
        vae = AutoencoderKL.from_pretrained(args.vae)
    factor = vae_scale_factor(vae.config)
    fold, rest = divmod(factor, args.scale)
    if fold < 1 or rest:
        parser.error(f"--scale {args.scale} must divide the autoencoder's factor {factor}")
    text_encoder = CLIPTextModel.from_pretrained(args.base / "text_encoder")
    torch.manual_seed(args.seed)
    unet = UNet2DConditionModel(
        sample_size=64 // fold, in_channels=vae.config.latent_channels + 3 * fold * fold,
        out_channels=vae.config.latent_channels,
        down_block_types=["DownBlock2D"] * len(args.widths), up_block_types=["UpBlock2D"] * len(args.widths),
        block_out_channels=args.widths, layers_per_block=1,
        cross_attention_dim=text_encoder.config.hidden_size, attention_head_dim=4, norm_num_groups=8,
        num_class_embeds=1000,
    )
    if args.residual:  # add nothing at first: the untrained stage returns the bicubic upsample (DiT zeroes its
        torch.nn.init.zeros_(unet.conv_out.weight)  # output layers the same way)
        torch.nn.init.zeros_(unet.conv_out.bias)
    image = args.out.with_name(args.out.name + "-2d")
    if image.exists():
        shutil.rmtree(image)
    scaling = vae.config.scaling_factor
    StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(args.base / "tokenizer"),
        unet=unet,
        # SD's betas with three changes, each measured on the pixel-space stage: set_alpha_to_one, so the last DDIM
        # step lands on the clean estimate (SD's 0.99915 leaves 3.7/255 RMS of noise, a 36.8 dB ceiling); zero
        # terminal SNR and trailing timesteps (Lin et al. 2024), so sampling starts where training saw pure noise
        # (with SD's leading steps, 1 step ran at t = 1 and 4 steps began at t = 751)
        scheduler=DDIMScheduler.from_config(make_scheduler().config, prediction_type=args.prediction_type,
                                            set_alpha_to_one=True, rescale_betas_zero_snr=True,
                                            timestep_spacing="trailing"),
        low_res_scheduler=default_low_res_scheduler(), max_noise_level=350,
    ).save_pretrained(image, safe_serialization=True)
    # diffusers' upscale pipeline forces the x4 VAE's 0.08333 into the config; keep the codec's 1 or the one
    # train_vae.py measured
    config_path = image / "vae" / "config.json"
    config_path.write_text(config_path.read_text().replace('"scaling_factor": 0.08333', f'"scaling_factor": {scaling}'))
    out = inflate_model_folder(image, args.out, overwrite=True, max_frames=args.max_frames)
    if args.residual:
        index_path = out / "model_index.json"
        write_text(index_path, json.dumps({**read_index(out), "residual": True}, indent=2) + "\n")
    print(f"wrote {out} (2-D source: {image})")
    return out


if __name__ == "__main__":
    main()
