"""Stage 2 of the tiny default model: train its text-to-image model, the stand-in for a pretrained Stable Diffusion.

A tiny CLIP text encoder (`vidiff.testing.tiny.make_text_encoder`: byte-level tokens, every character one token) and a
tiny `UNet2DConditionModel` (SD 1.5's 4-block layout, `vidiff.testing.tiny.make_unet2d`) are trained together from nothing
on captioned single frames of the shapes world, in the latent space of the frozen stage-1 VAE. It is standard
latent diffusion as SD was trained: epsilon prediction, uniform timesteps on SD's scaled-linear schedule (a
DDPMScheduler built from `make_scheduler().config`), MSE, and 10 % empty captions so that classifier-free guidance
works. The MSE is Min-SNR weighted (gamma 5, `--snr-gamma 0` for plain MSE), which in short runs lets the model
learn the caption-dependent, noisy timesteps sooner. Only training combinations are rendered; held-out captions
are only ever seen at evaluation.

To make CPU training fast, a pool of frames (a random training combination, clip seed and frame index each) is
rendered and encoded once (posterior mean times `scaling_factor`) and cached beside the output; each step samples
a batch from it. The saved model holds an EMA of the text encoder and U-Net weights (they are trained together, so
they are averaged together).

    python scripts/tiny_default/train_image.py --vae outputs/tiny-default/vae --steps 2800 --seed 0
    python scripts/tiny_default/train_image.py --vae outputs/tiny-default/vae --steps 2800 --resume  # after a kill

Writes (all atomically, built beside the destination and renamed into place):
  OUT/                          a complete StableDiffusionPipeline folder (the VAE copied from --vae)
  OUT-checkpoint/               the latest training state (weights, EMA, optimizer, state.json with the step)
  OUT-pool.safetensors          the encoded frame pool, reused while the VAE, seed and pool size are unchanged
  OUT/../image_metrics.json     the pixel judge on generated images for seen and held-out captions, sizes, timing

Every random draw of step `i` comes from generators seeded by (seed, i), so a resumed run repeats the straight run.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import CLIPTextModel

from vidiff.atomic import atomic_dir, atomic_path, write_text
from vidiff.data.shapes import COLOURS, DIRECTIONS, SHAPES, caption, combinations, render_clip
from vidiff.eval.judge import judge_clip
from vidiff.testing.tiny import make_scheduler, make_text_encoder, make_tokenizer, make_unet2d
from vidiff.training.checkpoints import read_checkpoint, write_checkpoint
from vidiff.training.ema import ema_decay, update_ema

OUTPUTS = Path(__file__).resolve().parents[2] / "outputs" / "tiny-default"
NUM_FRAMES = 16  # frames are drawn from 16-frame clips, the length the default model generates
SIZE = 64  # frame side in pixels (8x8 latents)
WARMUP = 200  # linear LR warm-up steps (fewer for very short runs), then cosine decay to 0
EMPTY_CAPTION_PROB = 0.1  # captions dropped to "" in training, for classifier-free guidance

# Independent random streams, each seeded by (seed, stream, index): training batches by step, the frame pool, and
# the evaluation (fixed seed, so runs with different seeds compare on equal terms)
TRAIN_STREAM, POOL_STREAM = 0, 1
EVAL_SEED = 1234
EVAL_INFERENCE_STEPS = 25  # DDIM steps at evaluation
EVAL_GUIDANCE = 5.0  # classifier-free guidance scale of the headline evaluation
GUIDANCE_SWEEP = (1.5, 3.0, 7.5)  # further scales, reported as accuracies only
SEEN_IMAGES_PER_PAIR = 4  # per colour-shape pair, captions cycling through its training directions: 84 images
HELDOUT_IMAGES_PER_COMBO = 8  # per held-out combination: 64 images


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae", type=Path, default=OUTPUTS / "vae", help="the trained stage-1 VAE folder")
    parser.add_argument("--out", type=Path, default=OUTPUTS / "image-model", help="StableDiffusionPipeline folder")
    parser.add_argument("--steps", type=int, default=2800, help="total optimizer steps (with --resume: the new total)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights, the pool and every draw")
    parser.add_argument("--width", type=int, default=32, help="U-Net width: block_out_channels = width * mults")
    parser.add_argument("--mults", type=str, default="1,2,2,2",
                        help="U-Net channel multipliers of the 4 blocks (SD 1.5: 1,2,4,4; capped for file size)")
    parser.add_argument("--layers", type=int, default=1, help="U-Net resnets per block (SD: 2)")
    parser.add_argument("--text-width", type=int, default=64, help="text encoder width = cross-attention dim")
    parser.add_argument("--text-layers", type=int, default=2, help="text encoder transformer layers")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--snr-gamma", type=float, default=5.0,
                        help="Min-SNR loss weighting min(SNR, gamma) / SNR (Hang et al. 2023); 0 for plain MSE")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the saved weights")
    parser.add_argument("--pool-size", type=int, default=24000, help="frames rendered and encoded once")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="steps between resumable checkpoints")
    parser.add_argument("--log-every", type=int, default=50, help="steps between logged loss lines")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads during the run")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (random draws stay on "
                        "the CPU, so a run is reproducible per device)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT-checkpoint/ if it exists")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start the text encoder and U-Net from this image-model folder instead of fresh weights "
                        "(their shapes then come from it, and --width, --mults, --layers, --text-* are ignored)")
    parser.add_argument("--metrics", type=Path, default=None,
                        help="where to write the metrics JSON (default: OUT/../image_metrics.json)")
    parser.add_argument("--word-loss", type=float, default=0.0,
                        help="weight of the caption-word loss: colour, shape and direction must be readable from "
                        "the text encoder's output at every token from the end of the caption on (0: off)")
    args = parser.parse_args(argv)
    try:
        args.mults = [int(m) for m in args.mults.split(",")]
    except ValueError:
        parser.error(f"--mults must be 4 comma-separated integers like 1,2,2,2, got {args.mults!r}")
    if len(args.mults) != 4 or min(args.mults) < 1:
        parser.error(f"--mults must be 4 positive integers (SD's 4 blocks), got {args.mults}")
    if args.width < 8 or args.width % 8:
        parser.error(f"--width must be a multiple of 8 (GroupNorm of 8 groups), got {args.width}")
    if args.text_width < 4 or args.text_width % 4:
        parser.error(f"--text-width must be a multiple of 4 (4 attention heads), got {args.text_width}")
    if min(args.steps, args.batch_size, args.layers, args.text_layers, args.pool_size, args.checkpoint_every) < 1:
        parser.error("--steps, --batch-size, --layers, --text-layers, --pool-size and --checkpoint-every must be >= 1")
    if args.init_from is not None and not (args.init_from / "unet" / "config.json").is_file():
        parser.error(f"--init-from {args.init_from} is not an image-model folder (no unet/config.json)")
    if args.word_loss < 0:
        parser.error(f"--word-loss must be >= 0, got {args.word_loss}")
    if not (args.vae / "config.json").is_file():
        parser.error(f"--vae {args.vae} has no config.json; train it first with scripts/tiny_default/train_vae.py")
    return args


# ---------------------------------------------------------------------------------------------------------------
# Data: a pool of captioned frames, encoded once
# ---------------------------------------------------------------------------------------------------------------

# caption table: index 0 is the empty caption (classifier-free guidance), then the training captions
CAPTIONS = ["", *(caption(*combo) for combo in combinations("train"))]


def stream_rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def torch_generator(seed: int, stream: int, index: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0]))


def render_pool(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 (n, h, w, 3), caption indices into CAPTIONS (n,)): each a random training combination,
    clip seed and frame index."""
    combos = combinations("train")
    frames, caption_ids = [], np.empty(count, dtype=np.int64)
    for i in range(count):
        k = rng.integers(len(combos))
        clip = render_clip(*combos[k], NUM_FRAMES, SIZE, seed=int(rng.integers(2**31)))
        frames.append(clip[rng.integers(NUM_FRAMES)])
        caption_ids[i] = k + 1
    return np.stack(frames), caption_ids


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (b, h, w, 3) -> float (b, 3, h, w) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def encode(vae: AutoencoderKL, frames: np.ndarray, batch: int = 256) -> torch.Tensor:
    """uint8 frames (n, h, w, 3) -> scaled posterior means (n, 4, h/8, w/8), the latents SD trains on."""
    chunks = [vae.encode(to_tensor(frames[i : i + batch]).to(vae.device)).latent_dist.mean.cpu()
              for i in range(0, len(frames), batch)]
    return torch.cat(chunks) * vae.config.scaling_factor


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_pool(vae_dir: Path, vae: AutoencoderKL, cache: Path, seed: int, count: int) -> tuple[torch.Tensor, np.ndarray]:
    """(latents (n, 4, 8, 8), caption indices (n,)): from `cache` when it was made by the same VAE, seed and size,
    else rendered, encoded and cached."""
    key = {"vae_sha256": file_digest(vae_dir / "diffusion_pytorch_model.safetensors"),
           "scaling_factor": str(vae.config.scaling_factor), "seed": str(seed), "count": str(count),
           "size": str(SIZE), "captions": str(len(CAPTIONS))}
    if cache.is_file():
        with safe_open(cache, "pt") as f:
            if f.metadata() == key:
                print(f"frame pool from {cache}")
                return f.get_tensor("latents"), f.get_tensor("caption_ids").numpy()
    began = time.time()
    frames, caption_ids = render_pool(stream_rng(seed, POOL_STREAM), count)
    latents = encode(vae, frames)
    with atomic_path(cache) as tmp:
        save_file({"latents": latents.contiguous(), "caption_ids": torch.from_numpy(caption_ids)}, tmp, metadata=key)
    print(f"frame pool: {count} frames rendered and encoded in {time.time() - began:.0f} s, cached at {cache}")
    return latents, caption_ids


# ---------------------------------------------------------------------------------------------------------------
# Models, schedule, EMA, checkpoints
# ---------------------------------------------------------------------------------------------------------------


def build_models(args):
    """(tokenizer, text encoder, U-Net): from --init-from's folder, else fresh weights seeded by --seed."""
    tokenizer = make_tokenizer()
    if args.init_from is not None:  # the shape is the folder's: record it in args, so checkpoints name it
        text_encoder = CLIPTextModel.from_pretrained(args.init_from / "text_encoder")
        unet = UNet2DConditionModel.from_pretrained(args.init_from / "unet")
        channels = list(unet.config.block_out_channels)
        args.width, args.mults, args.layers = channels[0], [c // channels[0] for c in channels], unet.config.layers_per_block
        args.text_width, args.text_layers = text_encoder.config.hidden_size, text_encoder.config.num_hidden_layers
        return tokenizer, text_encoder, unet
    text_encoder = make_text_encoder(tokenizer, width=args.text_width, layers=args.text_layers, seed=args.seed)
    unet = make_unet2d(width=args.width, cross_attention_dim=args.text_width, seed=args.seed,
                       block_out_channels=[args.width * m for m in args.mults], layers_per_block=args.layers)
    return tokenizer, text_encoder, unet


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (n, 77), padded exactly as StableDiffusionPipeline pads prompts."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def caption_words(captions: list[str]) -> torch.Tensor:
    """(n, 3) indices of each caption's colour, shape and direction in COLOURS, SHAPES, DIRECTIONS; -1 for ""."""
    words = [text.split() if text else None for text in captions]  # "a {colour} {shape} moving {direction}"
    return torch.tensor([[list(COLOURS).index(w[1]), list(SHAPES).index(w[2]), list(DIRECTIONS).index(w[4])]
                         if w else [-1, -1, -1] for w in words])


def word_readouts(width: int) -> list[torch.Tensor]:
    """Fixed orthonormal read-out directions of the caption-word loss, one (classes, width) matrix per word kind
    (colour, shape, direction). They are not trained: the text encoder's output itself must move along them, so
    that captions which differ in any one word end up far apart, as a pretrained CLIP keeps them."""
    sizes = [len(COLOURS), len(SHAPES), len(DIRECTIONS)]
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(width, sum(sizes), generator=generator, dtype=torch.float64))[0].T.float()
    return list(basis.split(sizes))


def word_loss(hidden: torch.Tensor, token_ids: torch.Tensor, words: torch.Tensor, readouts: list[torch.Tensor],
              eos_token_id: int) -> torch.Tensor:
    """Cross-entropy of reading each caption's colour, shape and direction from the text encoder's output
    `hidden` (n, 77, width) along the fixed `readouts`, averaged over the tokens from the first end-of-text token
    on (with causal attention they are the ones that have seen the whole caption; SD's pipeline passes them all to
    the U-Net). Empty captions (words -1) are left out."""
    keep = words[:, 0] >= 0
    hidden, token_ids, words = hidden[keep], token_ids[keep], words[keep]
    if not len(hidden):
        return hidden.sum()
    after_end = (token_ids == eos_token_id).cumsum(dim=1) > 0  # (n, 77)
    total = hidden.new_zeros(())
    for kind, readout in enumerate(readouts):
        logits = hidden @ readout.to(hidden).T  # (n, 77, classes)
        target = words[:, kind, None].expand(-1, logits.shape[1])
        losses = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (n, 77)
        total = total + (losses * after_end).sum() / after_end.sum()
    return total


def snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights min(SNR, gamma) / SNR for epsilon prediction (Min-SNR, Hang et al. 2023): the many
    nearly clean timesteps, where the caption barely matters, stop dominating the loss."""
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas_cumprod / (1 - alphas_cumprod)
    return snr.clamp(max=gamma) / snr


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up, then cosine decay from `peak` to 0 at `steps` (recomputed if a resume changes `steps`)."""
    warmup = min(WARMUP, max(steps // 10, 1))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(steps - warmup, 1), 1.0)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def checkpoint_path(out: Path) -> Path:
    return out.parent / f"{out.name}-checkpoint"


RESUME_KEYS = ("width", "mults", "layers", "text_width", "text_layers", "seed", "batch_size", "pool_size",
               "init_from", "word_loss")
RESUME_DEFAULTS = {"init_from": None, "word_loss": 0.0}  # checkpoints written before these options existed


def save_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer, state: dict) -> None:
    weights = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    write_checkpoint(path, {"weights": weights}, {"optimizer": optimizer.state_dict()}, state)


def checkpoint_value(args, key: str):
    """An argument as state.json stores it (paths as strings, JSON-safe)."""
    value = getattr(args, key)
    return str(value) if isinstance(value, Path) else value


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer, args) -> dict:
    """Load weights, EMA and optimizer state in place; returns state.json. Fails if the model shape differs."""
    tensors, extra, state = read_checkpoint(path)
    for key in RESUME_KEYS:
        stored = state.get(key, RESUME_DEFAULTS.get(key))
        if stored != checkpoint_value(args, key):
            value = ",".join(map(str, stored)) if isinstance(stored, list) else stored
            raise ValueError(f"{path} was trained with --{key.replace('_', '-')} {value}, not {getattr(args, key)}; "
                             "pass the same value to resume, or drop --resume to start over")
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors["weights"].items() if k.startswith(prefix)},
                               strict=True)
    optimizer.load_state_dict(extra["optimizer"])
    return state


# ---------------------------------------------------------------------------------------------------------------
# Evaluation: generate with the saved pipeline, judge each image as a 1-frame clip
# ---------------------------------------------------------------------------------------------------------------


def eval_captions() -> tuple[list[str], list[str]]:
    """(seen, held-out) captions: each colour-shape pair SEEN_IMAGES_PER_PAIR times, cycling through its training
    directions, and each held-out combination HELDOUT_IMAGES_PER_COMBO times."""
    train = set(combinations("train"))
    seen = []
    for colour in COLOURS:
        for shape in SHAPES:
            directions = [d for d in DIRECTIONS if (colour, shape, d) in train]
            seen += [caption(colour, shape, directions[k % len(directions)]) for k in range(SEEN_IMAGES_PER_PAIR)]
    heldout = [caption(*combo) for combo in combinations("heldout") for _ in range(HELDOUT_IMAGES_PER_COMBO)]
    return seen, heldout


@torch.no_grad()
def generate(pipe: StableDiffusionPipeline, prompts: list[str], seed: int, guidance: float) -> np.ndarray:
    """uint8 images (n, 64, 64, 3), DDIM with classifier-free guidance."""
    images = pipe(prompts, num_inference_steps=EVAL_INFERENCE_STEPS, guidance_scale=guidance,
                  generator=torch.Generator().manual_seed(seed), output_type="np").images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def judge_images(images: np.ndarray, prompts: list[str]) -> dict:
    results = [judge_clip(image[None], text) for image, text in zip(images, prompts)]
    single = [r["single_object_fraction"] == 1.0 for r in results]
    return {
        "n": len(results),
        "colour_accuracy": float(np.mean([r["colour_ok"] for r in results])),
        "shape_accuracy": float(np.mean([r["shape_ok"] for r in results])),
        "single_object_fraction": float(np.mean(single)),
        "all_ok": float(np.mean([r["colour_ok"] and r["shape_ok"] and s for r, s in zip(results, single)])),
        "failures": [f"{r['caption']} -> {r['colour']} {r['shape']}, {r['object_count'][0]} objects"
                     for r, s in zip(results, single) if not (r["colour_ok"] and r["shape_ok"] and s)],
    }


def evaluate(folder: Path, device="cpu") -> dict:
    pipe = StableDiffusionPipeline.from_pretrained(folder).to(device)
    pipe.set_progress_bar_config(disable=True)
    seen, heldout = eval_captions()

    def judged(guidance: float) -> dict:
        return {"seen": judge_images(generate(pipe, seen, EVAL_SEED, guidance), seen),
                "heldout": judge_images(generate(pipe, heldout, EVAL_SEED + 1, guidance), heldout)}

    sweep = {}
    for guidance in GUIDANCE_SWEEP:
        sweep[str(guidance)] = {group: {k: v for k, v in result.items() if k != "failures"}
                                for group, result in judged(guidance).items()}
    return {"guidance_scale": EVAL_GUIDANCE, "inference_steps": EVAL_INFERENCE_STEPS, **judged(EVAL_GUIDANCE),
            "guidance_sweep": sweep}


@torch.no_grad()
def caption_gaps(text_encoder, tokenizer) -> dict[str, float]:
    """Mean L2 distance between the text encoder's outputs (77 x width) for training captions that differ in one
    word only: the direction, the colour or the shape. A stand-in for a pretrained CLIP should keep all three apart."""
    combos = combinations("train")
    ids = tokenize(tokenizer, [caption(*c) for c in combos]).to(text_encoder.device)
    hidden = text_encoder(ids).last_hidden_state.flatten(1).cpu()
    gaps = {"direction": [], "colour": [], "shape": []}
    for i, j in itertools.combinations(range(len(combos)), 2):
        differ = [kind for kind, a, b in zip(("colour", "shape", "direction"), combos[i], combos[j]) if a != b]
        if len(differ) == 1:
            gaps[differ[0]].append((hidden[i] - hidden[j]).norm().item())
    return {kind: round(float(np.mean(values)), 2) for kind, values in gaps.items()}


def safetensors_bytes(folder: Path) -> dict[str, int]:
    """Bytes of each component's weights, and their total."""
    sizes = {p.parent.name: p.stat().st_size for p in sorted(folder.glob("*/*.safetensors"))}
    return {**sizes, "total": sum(sizes.values())}


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
    # 1. The frozen VAE and the frame pool in its latent space
    vae = AutoencoderKL.from_pretrained(args.vae).eval().requires_grad_(False).to(args.device)
    latents, pool_captions = load_pool(args.vae, vae, args.out.parent / f"{args.out.name}-pool.safetensors",
                                       args.seed, args.pool_size)
    print(f"pool latents: mean {latents.mean():.3f}, std {latents.std():.3f} (scaled)")
    latents = latents.to(args.device)

    # 2. Models, EMA copies and optimizer, from the checkpoint when resuming
    tokenizer, text_encoder, unet = build_models(args)
    text_encoder.to(args.device), unet.to(args.device)
    text_encoder.train(), unet.train()
    ema_text_encoder, ema_unet = copy.deepcopy(text_encoder).eval(), copy.deepcopy(unet).eval()
    modules = {"text_encoder": text_encoder, "unet": unet, "ema_text_encoder": ema_text_encoder, "ema_unet": ema_unet}
    params = [*text_encoder.parameters(), *unet.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=0.01)
    noise_scheduler = DDPMScheduler.from_config(make_scheduler().config)
    token_ids = tokenize(tokenizer, CAPTIONS).to(args.device)  # (captions, 77)
    words = caption_words(CAPTIONS).to(args.device)  # (captions, 3)
    readouts = word_readouts(text_encoder.config.hidden_size)
    ckpt = checkpoint_path(args.out)
    state = {"step": 0, "train_seconds": 0.0}
    if args.resume and (ckpt / "state.json").is_file():
        state = load_checkpoint(ckpt, modules, optimizer, args)
        print(f"resuming from {ckpt} at step {state['step']}")
    start, began = state["step"], time.time()

    def save(step: int) -> None:
        save_checkpoint(ckpt, modules, optimizer, {
            "step": step, "steps": args.steps, **{key: checkpoint_value(args, key) for key in RESUME_KEYS},
            "lr": args.lr, "snr_gamma": args.snr_gamma, "ema_decay": args.ema_decay,
            "train_seconds": state["train_seconds"] + time.time() - began,
        })

    # 3. Training loop: each step's batch, dropped captions, timesteps and noise depend only on (seed, step)
    progress = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="image", mininterval=10)
    for step in progress:
        lr = learning_rate(step, args.steps, args.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rng, generator = stream_rng(args.seed, TRAIN_STREAM, step), torch_generator(args.seed, TRAIN_STREAM, step)
        index = rng.integers(len(latents), size=args.batch_size)
        captions = np.where(rng.random(args.batch_size) < EMPTY_CAPTION_PROB, 0, pool_captions[index])
        clean = latents[torch.from_numpy(index).to(args.device)]  # (b, 4, 8, 8)
        noise = torch.randn(clean.shape, generator=generator).to(args.device)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch_size,),
                                  generator=generator).to(args.device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)

        unique, inverse = np.unique(captions, return_inverse=True)  # encode each distinct caption once
        unique = torch.from_numpy(unique).to(args.device)
        hidden = text_encoder(token_ids[unique]).last_hidden_state  # (distinct captions, 77, width)
        text = hidden[torch.from_numpy(inverse).to(args.device)]
        error = F.mse_loss(unet(noisy, timesteps, text).sample, noise, reduction="none").mean(dim=(1, 2, 3))  # (b,)
        if args.snr_gamma:
            error = error * snr_weights(noise_scheduler, timesteps, args.snr_gamma)
        loss = error.mean()
        if args.word_loss:
            words_loss = word_loss(hidden, token_ids[unique], words[unique], readouts, tokenizer.eos_token_id)
            loss = loss + args.word_loss * words_loss
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at step {step}; lower --lr (now {args.lr}) and rerun")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = ema_decay(args.ema_decay, step)
        for ema, model in ((ema_text_encoder, text_encoder), (ema_unet, unet)):
            update_ema(dict(ema.named_parameters()), dict(model.named_parameters()), decay)

        done = step + 1
        progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", refresh=False)
        if done % args.log_every == 0 or done == args.steps:
            words_note = f"  word loss {words_loss.item():.4f}" if args.word_loss else ""
            progress.write(f"step {done:6d}  loss {loss.item():.5f}{words_note}  lr {lr:.2e}  "
                           f"{(time.time() - began) / (done - start):.2f} s/step")
        if done % args.checkpoint_every == 0 or done == args.steps:
            save(done)
    progress.close()
    train_seconds = state["train_seconds"] + time.time() - began

    # 4. Save the pipeline with the EMA weights, then measure it
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=ema_text_encoder, tokenizer=tokenizer, unet=ema_unet, scheduler=make_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    with atomic_dir(args.out, overwrite=True) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    eval_began = time.time()
    metrics = {
        "out": str(args.out),
        "vae": str(args.vae),
        "unet_block_out_channels": list(unet.config.block_out_channels),
        "unet_layers_per_block": args.layers,
        "text_width": args.text_width,
        "text_layers": args.text_layers,
        "parameters": {"unet": sum(p.numel() for p in unet.parameters()),
                       "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
                       "vae": sum(p.numel() for p in vae.parameters())},
        "safetensors_bytes": safetensors_bytes(args.out),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "snr_gamma": args.snr_gamma,
        "init_from": None if args.init_from is None else str(args.init_from),
        "word_loss": args.word_loss,
        "caption_gaps": caption_gaps(ema_text_encoder, tokenizer),
        "ema_decay": args.ema_decay,
        "pool_size": args.pool_size,
        "seed": args.seed,
        "threads": args.threads,
        "device": str(args.device),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / args.steps, 3),
        "final_loss": loss.item() if args.steps > start else None,
        **evaluate(args.out, args.device),
    }
    metrics["eval_seconds"] = round(time.time() - eval_began, 1)
    write_text(args.metrics or args.out.parent / "image_metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("seen", "heldout", "guidance_sweep")}, indent=2))
    results = {EVAL_GUIDANCE: metrics, **{float(g): r for g, r in metrics["guidance_sweep"].items()}}
    for guidance, result in sorted(results.items()):
        for group in ("seen", "heldout"):
            g = result[group]
            print(f"guidance {guidance:4.1f} {group:8s}: colour {g['colour_accuracy']:.3f}  shape "
                  f"{g['shape_accuracy']:.3f}  single object {g['single_object_fraction']:.3f}  all {g['all_ok']:.3f}"
                  f"  (n={g['n']})")
    return metrics


if __name__ == "__main__":
    main()
