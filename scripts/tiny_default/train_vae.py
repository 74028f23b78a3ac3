"""Stage 1 of the tiny default model: train its 8x VAE from nothing on shapes-world frames.

The VAE has the layout of Stable Diffusion's (`vidiff.testing.tiny.make_vae`: 4 blocks, 64x64 RGB -> 4x8x8 latents) at a
small width. It learns to reconstruct single 64x64 frames drawn from the training combinations only; the held-out
combinations are rendered for evaluation and never trained on. The loss is SD's VAE loss without its GAN and
LPIPS parts: L1 reconstruction in [-1, 1] plus a KL term weighted 1e-6 against the per-image summed L1, which
keeps the latents near a Gaussian's scale. At the end `scaling_factor` is set, as SD does, to 1 / std of the
latents of training frames, so that scaled latents have unit std for the diffusion stages.

    python scripts/tiny_default/train_vae.py --out outputs/tiny-default/vae --steps 3000 --width 32 --seed 0
    python scripts/tiny_default/train_vae.py --out outputs/tiny-default/vae --steps 3000 --resume  # after a kill

Writes (all atomically, built beside the destination and renamed into place):
  OUT/                      the VAE, `AutoencoderKL.save_pretrained(OUT, safe_serialization=True)`
  OUT-checkpoint/           the latest training state (weights, optimizer, state.json with the step)
  OUT/../NAME_metrics.json  (NAME: the last part of OUT) held-out PSNR, the pixel judge on reconstructed held-out clips, the scaling factor

Every random draw of step `i` comes from generators seeded by (seed, i), so a resumed run repeats the straight run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from vidiff.atomic import atomic_dir, write_text
from vidiff.data.shapes import caption, combinations, render_clip
from vidiff.eval.judge import judge_clip
from vidiff.testing.tiny import make_vae
from vidiff.training.checkpoints import read_checkpoint, write_checkpoint

NUM_FRAMES = 16  # frames are drawn from 16-frame clips, the length the default model generates
SIZE = 64  # frame side in pixels
WARMUP = 100  # linear LR warm-up steps (fewer for very short runs), then cosine decay to 0

# Independent random streams, each seeded by (seed, stream, index): training batches by step, the frames that set
# the scaling factor, and the evaluation frames (fixed seed, so runs with different seeds compare on equal terms)
TRAIN_STREAM, SCALE_STREAM, EVAL_STREAM = 0, 1, 2
EVAL_SEED = 1234
SCALE_FRAMES = 512  # training frames encoded to measure the latent std
PSNR_FRAMES = 64  # held-out frames for the reconstruction PSNR
JUDGE_CLIPS_PER_COMBO = 1  # held-out clips judged after encode + decode: 8 clips of 16 frames


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the trained VAE (diffusers layout)")
    parser.add_argument("--steps", type=int, default=3000, help="total optimizer steps (with --resume: the new total)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights and every training draw")
    parser.add_argument("--width", type=int, default=32, help="block_out_channels = [w/2, w, w, w]; a multiple of 16")
    parser.add_argument("--layers", type=int, default=1, help="resnet layers per block (SD: 2)")
    parser.add_argument("--blocks", type=int, default=4, help="encoder/decoder blocks: downscale 2^(blocks-1) (default "
                        "4, 8x as SD; 2 for the 2x VAE of the tiny upscaler, as the x4 upscaler's VAE is 4x)")
    parser.add_argument("--frames-per-clip", type=int, default=1, help="training frames taken from each rendered "
                        "clip (default 1; 4 at 128 pixels, where rendering is slower than the step)")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64; 128 for the upscaler)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--kl-weight", type=float, default=1e-6, help="KL weight against the per-image summed L1")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between resumable checkpoints")
    parser.add_argument("--log-every", type=int, default=50, help="steps between logged loss lines")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads during the run")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (random draws stay on "
                        "the CPU, so a run is reproducible per device)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT-checkpoint/ if it exists")
    args = parser.parse_args(argv)
    if args.width < 16 or args.width % 16:
        parser.error(f"--width must be a multiple of 16 (GroupNorm of 8 groups over width/2), got {args.width}")
    if args.steps < 1 or args.batch_size < 1 or args.layers < 1 or args.checkpoint_every < 1:
        parser.error("--steps, --batch-size, --layers and --checkpoint-every must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------------------------
# Data: frames rendered on the fly
# ---------------------------------------------------------------------------------------------------------------


def stream_rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def torch_generator(seed: int, stream: int, index: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0]))


def random_frames(rng: np.random.Generator, count: int, split: str, per_clip: int = 1) -> np.ndarray:
    """`count` frames uint8 (b, h, w, 3), each from a random combination of `split`, clip seed and frame index;
    `per_clip` frames from each rendered clip (rendering dominates a step at 128 pixels)."""
    combos = combinations(split)
    frames = []
    while len(frames) < count:
        colour, shape, direction = combos[rng.integers(len(combos))]
        clip = render_clip(colour, shape, direction, NUM_FRAMES, SIZE, seed=int(rng.integers(2**31)))
        frames += [clip[rng.integers(NUM_FRAMES)] for _ in range(min(per_clip, count - len(frames)))]
    return np.stack(frames)


def to_tensor(frames: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 (b, h, w, 3) -> float (b, 3, h, w) in [-1, 1] on `device`."""
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (b, 3, h, w) in [-1, 1] -> uint8 (b, h, w, 3)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------------------------------------------------------
# Model, schedule, checkpoints
# ---------------------------------------------------------------------------------------------------------------


def build_vae(width: int, layers: int, seed: int, blocks: int = 4) -> AutoencoderKL:
    """`vidiff.testing.tiny.make_vae`'s AutoencoderKL, with `layers` resnets per block and `blocks` blocks."""
    config = {**make_vae(width=width, seed=seed).config, "layers_per_block": layers,
              "down_block_types": ["DownEncoderBlock2D"] * blocks, "up_block_types": ["UpDecoderBlock2D"] * blocks,
              "block_out_channels": ([width // 2] + [width] * 3)[:blocks],
              # a 2x VAE's mid block sits at half the frame size: attention there is quadratic in its pixels
              "mid_block_add_attention": blocks > 2}
    torch.manual_seed(seed)
    return AutoencoderKL.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up, then cosine decay from `peak` to 0 at `steps` (recomputed if a resume changes `steps`)."""
    warmup = min(WARMUP, max(steps // 10, 1))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(steps - warmup, 1), 1.0)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def checkpoint_path(out: Path) -> Path:
    return out.parent / f"{out.name}-checkpoint"


def save_checkpoint(path: Path, vae: AutoencoderKL, optimizer: torch.optim.Optimizer, state: dict) -> None:
    write_checkpoint(path, {"vae": vae.state_dict()}, {"optimizer": optimizer.state_dict()}, state)


def load_checkpoint(path: Path, vae: AutoencoderKL, optimizer: torch.optim.Optimizer, args) -> dict:
    """Load weights and optimizer state in place; returns state.json. Fails if the model shape differs."""
    tensors, extra, state = read_checkpoint(path)
    for key in ("width", "layers", "seed", "batch_size"):
        if state[key] != getattr(args, key):
            raise ValueError(f"{path} was trained with --{key.replace('_', '-')} {state[key]}, not "
                             f"{getattr(args, key)}; pass the same value to resume, or drop --resume to start over")
    vae.load_state_dict(tensors["vae"], strict=True)
    optimizer.load_state_dict(extra["optimizer"])
    return state


# ---------------------------------------------------------------------------------------------------------------
# Loss and measurements
# ---------------------------------------------------------------------------------------------------------------


def vae_loss(vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator, kl_weight: float):
    """(loss, l1, kl): mean L1 in [-1, 1] + kl_weight * KL / pixels, i.e. SD's weighting of a per-image sum."""
    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample(generator=generator)).sample  # (b, 3, h, w)
    l1 = (recon - images).abs().mean()
    kl = posterior.kl().mean()  # per image, summed over the latent
    return l1 + kl_weight * kl / images[0].numel(), l1, kl


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """Encode (posterior mode) and decode uint8 frames (b, h, w, 3) -> uint8 frames."""
    device = vae.device
    chunks = [vae.decode(vae.encode(to_tensor(frames[i : i + batch], device)).latent_dist.mode()).sample
              for i in range(0, len(frames), batch)]
    return to_uint8(torch.cat(chunks))


@torch.no_grad()
def latent_std(vae: AutoencoderKL, frames: np.ndarray, generator: torch.Generator) -> tuple[float, float]:
    """(mean, std) of posterior samples of `frames`, the latents a diffusion model trains on, before scaling."""
    latents = torch.cat([vae.encode(to_tensor(frames[i : i + 64], vae.device)).latent_dist
                         .sample(generator=generator) for i in range(0, len(frames), 64)])
    return latents.mean().item(), latents.std().item()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 arrays, from their mean squared error over all pixels (not a mean of per-frame PSNRs)."""
    mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(1 / mse))


def evaluate(vae: AutoencoderKL) -> dict:
    """Held-out PSNR on single frames, and the pixel judge on reconstructed held-out clips (and on the originals)."""
    frames = random_frames(stream_rng(EVAL_SEED, EVAL_STREAM), PSNR_FRAMES, "heldout")
    recon = reconstruct(vae, frames)
    per_frame = [psnr(a, b) for a, b in zip(frames, recon)]

    judged, judged_originals = [], []
    for k, (colour, shape, direction) in enumerate(combinations("heldout") * JUDGE_CLIPS_PER_COMBO):
        clip = render_clip(colour, shape, direction, NUM_FRAMES, SIZE, seed=EVAL_SEED + k)
        text = caption(colour, shape, direction)
        judged.append(judge_clip(reconstruct(vae, clip), text))
        judged_originals.append(judge_clip(clip, text))

    def accuracies(results):
        return {
            "colour_accuracy": float(np.mean([r["colour_ok"] for r in results])),
            "shape_accuracy": float(np.mean([r["shape_ok"] for r in results])),
            "direction_accuracy": float(np.mean([r["direction_ok"] for r in results])),
            "single_object_fraction": float(np.mean([r["single_object_fraction"] for r in results])),
        }

    return {
        "heldout_psnr_db": psnr(frames, recon),
        "heldout_psnr_db_min_frame": min(per_frame),
        "heldout_frames": len(frames),
        "heldout_clips_judged": len(judged),
        **accuracies(judged),
        "judge_on_originals": accuracies(judged_originals),
        "failures": [r["caption"] + f" -> {r['colour']} {r['shape']}" for r in judged
                     if not (r["colour_ok"] and r["shape_ok"])],
    }


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args) -> dict:
    # 1. Model and optimizer, from the checkpoint when resuming
    global SIZE
    SIZE = args.size  # every frame rendered from here on (training and measurements) has this side
    vae = build_vae(args.width, args.layers, args.seed, args.blocks).to(args.device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ckpt = checkpoint_path(args.out)
    state = {"step": 0, "train_seconds": 0.0}
    if args.resume and (ckpt / "state.json").is_file():
        state = load_checkpoint(ckpt, vae, optimizer, args)
        print(f"resuming from {ckpt} at step {state['step']}")
    start, began = state["step"], time.time()

    def save(step: int) -> None:
        save_checkpoint(ckpt, vae, optimizer, {
            "step": step, "steps": args.steps, "width": args.width, "layers": args.layers, "seed": args.seed,
            "batch_size": args.batch_size, "lr": args.lr, "kl_weight": args.kl_weight,
            "train_seconds": state["train_seconds"] + time.time() - began,
        })

    # 2. Training loop: each step's frames and posterior noise depend only on (seed, step)
    progress = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="vae", mininterval=10)
    for step in progress:
        lr = learning_rate(step, args.steps, args.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = to_tensor(random_frames(stream_rng(args.seed, TRAIN_STREAM, step), args.batch_size, "train",
                                         args.frames_per_clip),
                           args.device)
        loss, l1, kl = vae_loss(vae, images, torch_generator(args.seed, TRAIN_STREAM, step), args.kl_weight)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at step {step}; lower --lr (now {args.lr}) and rerun")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()

        done = step + 1
        progress.set_postfix(l1=f"{l1.item():.4f}", kl=f"{kl.item():.0f}", lr=f"{lr:.2e}", refresh=False)
        if done % args.log_every == 0 or done == args.steps:
            progress.write(f"step {done:6d}  l1 {l1.item():.5f}  kl {kl.item():9.1f}  lr {lr:.2e}  "
                           f"{(time.time() - began) / (done - start):.2f} s/step")
        if done % args.checkpoint_every == 0 or done == args.steps:
            save(done)
    progress.close()
    train_seconds = state["train_seconds"] + time.time() - began
    vae.eval()

    # 3. Scaling factor, as SD's: scaled latents of training frames get unit std
    frames = random_frames(stream_rng(args.seed, SCALE_STREAM), SCALE_FRAMES, "train")
    mean, std = latent_std(vae, frames, torch_generator(args.seed, SCALE_STREAM))
    vae.register_to_config(scaling_factor=1 / std)
    heldout = random_frames(stream_rng(EVAL_SEED, SCALE_STREAM), SCALE_FRAMES // 4, "heldout")
    _, heldout_std = latent_std(vae, heldout, torch_generator(EVAL_SEED, SCALE_STREAM))

    # 4. Save the VAE, then measure it
    with atomic_dir(args.out, overwrite=True) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
    metrics = {
        "out": str(args.out),
        "width": args.width,
        "layers_per_block": args.layers,
        "block_out_channels": list(vae.config.block_out_channels),
        "parameters": sum(p.numel() for p in vae.parameters()),
        "file_bytes": (args.out / "diffusion_pytorch_model.safetensors").stat().st_size,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "kl_weight": args.kl_weight,
        "seed": args.seed,
        "train_seconds": round(train_seconds, 1),
        "threads": args.threads,
        "device": str(args.device),
        "latent_mean": mean,
        "latent_std": std,
        "scaling_factor": vae.config.scaling_factor,
        "scaled_latent_std_train": std * vae.config.scaling_factor,
        "scaled_latent_std_heldout": heldout_std * vae.config.scaling_factor,
        **evaluate(vae),
    }
    write_text(args.out.parent / f"{args.out.name}_metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
