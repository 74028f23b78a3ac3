"""Training throughput: the latent cache on CPU (tiny model, shapes clips), or SD 1.5 size on a GPU.

    python scripts/bench_train.py [--steps 20] [--clips 16] [--frames 16] [--size 64] [--batch 2] [--threads 1]
    python scripts/bench_train.py --sd15 [--frames 16] [--size 512] [--batch 1] [--steps 8] [--json out.json]

--sd15 times temporal-layer training of a random-weight SD 1.5-size video U-Net through the trainer's own loss
(`vidiff.training.trainer._loss`, cached-latent batches, bf16 autocast as `mixed_precision: bf16`, AdamW on the
temporal parameters), with and without gradient checkpointing, next to diffusers' UNetMotionModel (AnimateDiff)
training its motion modules the same way. Reports frames per second (median step) and peak CUDA memory.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vidiff.config import TrainConfig
from vidiff.data.shapes import write_shapes_folder
from vidiff.models.inflate_folder import inflate_model_folder
from vidiff.testing.tiny import make_tiny_sd
from vidiff.training.trainer import train


class PerFrameText(torch.nn.Module):
    """diffusers' UNetMotionModel reads one text per frame: repeat each clip's text, as AnimateDiffPipeline does."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, text):
        return self.unet(sample, timestep, text.repeat_interleave(sample.shape[2], dim=0))


def bench_sd15(args) -> list[dict]:
    from diffusers import DDPMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel

    from vidiff import inflate_unet
    from vidiff.testing.configs import SD15_UNET
    from vidiff.testing.tiny import make_text_encoder, make_tokenizer
    from vidiff.models.temporal import temporal_parameters
    from vidiff.pipelines.text_to_video import set_conv_layout
    from vidiff.training.trainer import _loss, step_generator

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    tokenizer = make_tokenizer()
    with torch.device(device):
        torch.manual_seed(0)
        unet2d = UNet2DConditionModel(**SD15_UNET)
        text_encoder = make_text_encoder(tokenizer, width=768, layers=12).requires_grad_(False).to(torch.bfloat16)
    vae = torch.nn.Module()  # cached-latent batches never call the VAE; _loss reads its scaling factor
    vae.config = type("Config", (), {"scaling_factor": 0.18215})()
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    latent = (args.batch, 4, args.frames, args.size // 8, args.size // 8)

    def build(name):
        if name.startswith("vidiff"):
            with torch.device(device):
                unet = inflate_unet(unet2d, max_frames=max(32, args.frames))
            set_conv_layout(unet, device)  # as the trainer does
            trained = temporal_parameters(unet)
        else:
            with torch.device(device):
                adapter = MotionAdapter(motion_max_seq_length=max(32, args.frames))
                motion = UNetMotionModel.from_unet2d(unet2d, adapter).to(device)
            motion.freeze_unet2d_params()
            trained = [p for p in motion.parameters() if p.requires_grad]
            unet = PerFrameText(motion)
        unet.requires_grad_(False)
        for param in trained:
            param.requires_grad_(True)
        if "frozen bf16" in name:  # frozen weights stored in bf16, so autocast need not cast them every step
            for param in unet.parameters():
                if not param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
        if name.endswith("checkpointing"):
            (unet.unet if isinstance(unet, PerFrameText) else unet).enable_gradient_checkpointing()
        return unet.train(), trained

    rows = []
    for name in ("vidiff", "vidiff, checkpointing", "vidiff, frozen bf16", "vidiff, frozen bf16, checkpointing",
                 "diffusers-unetmotion", "diffusers-unetmotion, checkpointing"):
        unet, trained = build(name)
        optimizer = torch.optim.AdamW(trained, lr=1e-5)
        times = []
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for step in range(args.warmup + args.steps):
            generator = step_generator(0, step)
            batch = {"mean": torch.randn(latent, generator=generator),
                     "std": torch.full(latent, 0.05), "caption": ["a red circle moving right"] * args.batch}
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16):  # what accelerate's mixed_precision=bf16 does
                loss = _loss(batch, unet, vae, text_encoder, tokenizer, scheduler, generator, 0.0, device)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
        row = {"implementation": name, "step_s": statistics.median(times),
               "frames_per_second": args.batch * args.frames / statistics.median(times),
               "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
               "trained_parameters_m": sum(p.numel() for p in trained) / 1e6, "loss": loss.item()}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del unet, trained, optimizer, loss
        if cuda:
            torch.cuda.empty_cache()
    where = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"\nSD 1.5 size, {args.batch} x {args.frames} frames x {args.size}^2, bf16 autocast, "
          f"{where}, torch {torch.__version__}, median of {args.steps} steps\n")
    print("| implementation | frames/s | step (s) | peak GB | trained M params |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['implementation']} | {r['frames_per_second']:.1f} | {r['step_s']:.3f} | {r['peak_gb']:.1f} | "
              f"{r['trained_parameters_m']:.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sd15", action="store_true", help="SD 1.5 size on CUDA, random weights, synthetic latents")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="--sd15: also write the rows here")
    parser.add_argument("--device", default="cuda", help="--sd15: where to run (cpu only for a smoke test)")
    args = parser.parse_args()
    if args.sd15:
        rows = bench_sd15(args)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="vidiff-bench-train-"))
    write_shapes_folder(work / "clips", num_clips=args.clips, num_frames=args.frames, size=args.size)
    model = inflate_model_folder(make_tiny_sd(work / "sd"), work / "video", max_frames=max(16, args.frames))
    for cache in (False, True):
        config = TrainConfig(model=str(model), data=str(work / "clips"), output=str(work / f"run-{cache}"),
                             num_frames=args.frames, frame_stride=1, resolution=args.size, batch_size=args.batch,
                             max_steps=args.steps, checkpoint_every=10**6, log_every=5, cache_latents=cache)
        summary = train(config)
        print(json.dumps({"cache_latents": cache, "frames_per_second": round(summary["frames_per_second"], 1),
                          "seconds": round(summary["seconds"], 1)}))


if __name__ == "__main__":
    main()
