"""Fine-tune a video model on a folder of videos (captions optional), single process or under `accelerate launch`.

The objective is the latent diffusion loss of the image model, on clips: encode frames with the frozen VAE, add
noise at a random timestep, predict the noise (or v, following the scheduler config) with the video U-Net.
By default only the temporal layers train (AnimateDiff / Make-A-Video); `trainable: all | spatial` are there for
building image models from scratch, as the tiny default does; `trainable: lora` trains peft LoRAs (a MotionLoRA on
the temporal attention by default) and writes them as `lora.safetensors` in diffusers' format.

Exact resume: every random draw in a step comes from a generator seeded by (seed, step, micro-batch, process), and
the data position is the number of samples consumed, so a resumed run repeats the straight run bit for bit.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from vidiff.atomic import atomic_dir, write_text
from vidiff.config import TrainConfig
from vidiff.errors import VidiffInputError
from vidiff.model_folder import (COMPONENTS, EXTRA_COMPONENTS, check_frame_size, component_classes, is_model_folder,
                                 read_index, write_model_index)
from vidiff.models.interpolation import extrapolation_mask, interpolation_mask, masked_condition, widen_conv_in
from vidiff.models.lora import add_lora, save_lora
from vidiff.models.temporal import temporal_named_parameters
from vidiff.training.checkpoints import load_checkpoint, save_checkpoint
from vidiff.training.ema import ema_decay, update_ema
from vidiff.training.resume import check_checkpoint_fits, check_room_for_run, prepare_run, record_run
from vidiff.weights import loading

logger = logging.getLogger(__name__)
TEXT_ENCODER_PREFIX = "text_encoder."  # names of text-encoder weights among the trained ones (train_text_encoder)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def step_generator(*keys: int) -> torch.Generator:
    """A CPU generator that depends only on `keys` (seed, step, micro-batch, process)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(keys)).generate_state(1)[0]))


class ClipSampler(torch.utils.data.Sampler):
    """Endless `(index, item_seed)` keys: a fresh permutation per epoch, this process's share, from `start` on."""

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start

    def __iter__(self):
        per_epoch = len(range(self.rank, self.size, self.world))
        epoch, position = divmod(self.start, per_epoch)
        while True:
            order = torch.randperm(self.size, generator=step_generator(self.seed, epoch))[self.rank :: self.world]
            for index in order[position:].tolist():
                yield index, int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
            epoch, position = epoch + 1, 0


class LatentCache(torch.utils.data.Dataset):
    """Each clip encoded once by the VAE (fixed start, centre crop): the latent mean and std, plus the caption.
    With `lowres_scale` (task: upscale) also the clip downsampled by that factor, unblurred (c, f, h, w)."""

    def __init__(self, dataset, vae, device, batch_size: int = 4, lowres_scale: int | None = None):
        from vidiff.data.degrade import degrade

        self.items = []
        for index in tqdm(range(len(dataset)), desc="caching latents", leave=False):
            item = dataset[index]
            frames = rearrange(item["video"][None], "b c f h w -> (b f) c h w").to(device, vae.dtype)
            dist = vae.encode(frames).latent_dist
            mean, std = (rearrange(t, "f c h w -> c f h w").cpu() for t in (dist.mean, dist.std))
            self.items.append({"mean": mean, "std": std, "caption": item["caption"]})
            if lowres_scale:
                self.items[-1]["lowres"] = degrade(item["video"][None], lowres_scale)[0]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        return self.items[index]


def trainable_parameters(unet, mode: str) -> dict[str, torch.nn.Parameter]:
    """Parameters to train, by name: 'temporal' (the default), 'all', 'spatial' (everything not temporal), or
    'lora' (the peft LoRA layers `add_lora` put on the U-Net)."""
    if mode == "lora":
        return {name: param for name, param in unet.named_parameters() if ".lora_" in name}
    temporal = dict(temporal_named_parameters(unet))
    if mode == "temporal":
        return temporal
    everything = dict(unet.named_parameters())
    return everything if mode == "all" else {k: v for k, v in everything.items() if k not in temporal}


@dataclass
class Run:
    """One training run's moving parts, set up by `train`'s steps and advanced by its loop."""

    config: TrainConfig
    accelerator: Any
    pipe: Any  # the pipeline the models came from (validation samples through it)
    unet: Any
    text_encoder: Any
    trained: dict[str, torch.nn.Parameter]  # what the optimizer updates, by name
    noise_scheduler: Any = None
    optimizer: Any = None
    lr_scheduler: Any = None
    ema: dict[str, torch.Tensor] | None = None
    step: int = 0
    samples_seen: int = 0
    loss: float = float("nan")
    checkpoint: Path | None = None  # the one resumed from
    last_checkpoint: Path | None = None


def train(config: TrainConfig, resume: bool | str = False, stop_after: int | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) training; returns the run summary also written to `train_summary.json`.

    stop_after: end right after that step's checkpoint, as a killed run would (for tests and time-boxed runs).
    overwrite: start over in an output folder that holds a run (`vidiff.training.resume.prepare_run`).
    """
    from accelerate import Accelerator

    config.check()
    output = Path(config.output)

    # 1. Accelerator, models
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=_tracker(),
                              project_dir=str(output), gradient_accumulation_steps=config.gradient_accumulation_steps)
    checkpoint = prepare_run(config, resume, overwrite, accelerator.is_main_process)  # before loading anything
    check_frame_size(config.model, resolution=config.resolution)
    run = load_models(config, accelerator)
    if accelerator.is_main_process:
        check_room_for_run(config, run.trained)  # before reading data: checkpoints and the final model must fit

    # 2. Data: bad files are skipped and counted by the dataset; all-bad stops here, before training
    dataset, data_summary = load_data(config, run)

    # 3. Optimizer, LR schedule, EMA
    make_optimizer(run)

    # 4. Resume, then hand the models to accelerate
    resume_run(run, checkpoint)
    loader = prepare(run, dataset)

    # 5. Training loop
    elapsed = train_loop(run, loader, stop_after)

    # 6. Final outputs: temporal weights, a full model folder, validation clips, the summary
    summary = {
        "steps": run.step,
        "max_steps": config.max_steps,
        "final_loss": run.loss,
        "frames_per_second": elapsed["frames_per_second"],
        "seconds": elapsed["seconds"],
        "resumed_from": str(run.checkpoint) if run.checkpoint else None,
        "videos": data_summary["videos"],
        "short_videos_strided": data_summary["short_strided"],  # shorter than one clip: read at a smaller stride
        "skipped_files": data_summary["skipped_files"],
        "trainable": config.trainable,
        "train_text_encoder": config.train_text_encoder,
        "trainable_parameters": sum(p.numel() for p in run.trained.values()),
        "latent_cache": config.cache_latents,
    }
    if accelerator.is_main_process and run.step == config.max_steps:
        save_outputs(run, output)
    if accelerator.is_main_process:
        write_text(output / "train_summary.json", json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary


def load_models(config: TrainConfig, accelerator) -> Run:
    """The pipeline's models on the device: frozen VAE and text encoder, the U-Net with its trained parameters."""
    from diffusers import DDPMScheduler

    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    device = accelerator.device
    pipeline_class = TextToVideoPipeline
    if config.task == "upscale":
        from vidiff.pipelines.upscale import UpscalePipeline as pipeline_class
    pipe = pipeline_class.from_pretrained(config.model, inflate_image_model=True)
    if config.task == "interpolate" and pipe.unet.unet.config.in_channels == pipe.vae.config.latent_channels:
        pipe.unet = widen_conv_in(pipe.unet)  # a base video model: add the masked-frame inputs (zero at start)
    unet, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
    if config.task == "interpolate" and unet.unet.config.in_channels != 2 * vae.config.latent_channels + 1:
        raise VidiffInputError(f"{config.model} has a U-Net with {unet.unet.config.in_channels} input channels; "
                               "interpolation needs a base video model or an interpolation model")
    frozen_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    for model in (vae, text_encoder):  # nn.Module.to: diffusers' .to(dtype) warns about nothing here
        torch.nn.Module.to(model.requires_grad_(False).eval(), device, frozen_dtype)
    unet.check_num_frames(config.num_frames)
    if config.trainable == "lora":  # peft LoRAs, seeded by the run's seed: a resumed run builds the same ones
        add_lora(unet, config.lora_rank, config.lora_alpha, config.lora_targets, seed=config.seed)
    trained = trainable_parameters(unet, config.trainable)
    if config.train_text_encoder:  # trained in fp32 like the U-Net's trained weights; names kept apart by a prefix
        text_encoder.to(device, torch.float32).train()
        trained |= {f"{TEXT_ENCODER_PREFIX}{k}": p.requires_grad_(True) for k, p in text_encoder.named_parameters()}
    unet.requires_grad_(False)
    for param in trained.values():
        param.requires_grad_(True)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return Run(config, accelerator, pipe, unet, text_encoder, trained,
               noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config))


def load_data(config: TrainConfig, run: Run):
    """(the clips to train on, the folder's summary): decoded clips, or their latents cached once."""
    from vidiff.data.video_folder import VideoFolderDataset

    dataset = VideoFolderDataset(config.data, num_frames=config.num_frames, resolution=config.resolution,
                                 frame_stride=config.frame_stride, target_fps=config.target_fps,
                                 random_crop=config.random_crop, short_videos=config.short_videos, seed=config.seed)
    data_summary = dataset.summary()
    if config.cache_latents:
        fixed = VideoFolderDataset(config.data, num_frames=config.num_frames, resolution=config.resolution,
                                   frame_stride=config.frame_stride, target_fps=config.target_fps,
                                   short_videos=config.short_videos, train=False, seed=config.seed)
        with torch.no_grad():
            dataset = LatentCache(fixed, run.pipe.vae, run.accelerator.device,
                                  lowres_scale=getattr(run.pipe, "scale", None))
    return dataset, data_summary


def make_optimizer(run: Run) -> None:
    """AdamW over the trained parameters (conv_in's new inputs at a higher rate if asked), the LR schedule, the EMA;
    the U-Net goes to the device in the layout sampling uses there."""
    from diffusers.optimization import get_scheduler

    from vidiff.pipelines.text_to_video import set_conv_layout

    config, trained = run.config, run.trained
    fast = {k for k in trained if k.startswith("unet.conv_in.")} if config.conv_in_lr_scale != 1 else set()
    groups = [{"params": [p for k, p in trained.items() if k not in fast]}]
    if fast:  # conv_in's new condition inputs start at zero: let them catch up
        groups.append({"params": [trained[k] for k in sorted(fast)],
                       "lr": config.learning_rate * config.conv_in_lr_scale})
    run.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    run.lr_scheduler = get_scheduler(config.lr_scheduler, run.optimizer, num_warmup_steps=config.lr_warmup_steps,
                                     num_training_steps=config.max_steps)
    run.unet.to(run.accelerator.device)
    set_conv_layout(run.unet, run.accelerator.device)  # the layout sampling uses on this device
    run.ema = {k: v.detach().clone().float() for k, v in trained.items()} if config.ema else None


def resume_run(run: Run, checkpoint: Path | None) -> None:
    """Restore the trained weights, EMA, optimizer, LR schedule, torch's RNG and the data position."""
    run.checkpoint = run.last_checkpoint = checkpoint
    if checkpoint is None:
        return
    saved = load_checkpoint(checkpoint)
    check_checkpoint_fits(saved, run.trained, run.optimizer, checkpoint)
    with torch.no_grad():
        for name, param in run.trained.items():
            param.copy_(saved["params"][name])
    if run.ema is not None and saved["ema"] is not None:
        run.ema = {k: v.float().to(run.accelerator.device) for k, v in saved["ema"].items()}
    run.optimizer.load_state_dict(saved["optimizer"])
    run.lr_scheduler.load_state_dict(saved["lr_scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    run.step, run.samples_seen = saved["state"]["step"], saved["state"]["samples_seen"]
    run.accelerator.print(f"resumed from {checkpoint} at step {run.step}")


def prepare(run: Run, dataset):
    """The data loader from the resumed position; the models and optimizer prepared by accelerate; config.json."""
    config, accelerator = run.config, run.accelerator
    sampler = ClipSampler(len(dataset), config.seed, accelerator.process_index, accelerator.num_processes,
                          start=run.samples_seen)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                                         num_workers=config.num_workers)
    run.unet.train()
    if config.train_text_encoder:  # prepared too, so that its gradients are averaged across processes
        run.unet, run.text_encoder, run.optimizer = accelerator.prepare(run.unet, run.text_encoder, run.optimizer)
    else:
        run.unet, run.optimizer = accelerator.prepare(run.unet, run.optimizer)
    if accelerator.is_main_process:
        output = Path(config.output)
        output.mkdir(parents=True, exist_ok=True)
        record_run(output, config, run.checkpoint, run.step)
        accelerator.init_trackers("vidiff")
    return loader


def train_loop(run: Run, loader, stop_after: int | None) -> dict[str, float]:
    """Train to max_steps (or stop_after), with logging, checkpoints and validation; returns the seconds and the
    frames per second of the steps run here."""
    config, accelerator = run.config, run.accelerator
    batches = iter(loader)
    progress = tqdm(total=config.max_steps, initial=run.step, desc="training",
                    disable=not accelerator.is_main_process)
    frames_per_step = (config.batch_size * config.num_frames * accelerator.num_processes
                       * config.gradient_accumulation_steps)
    start_time, start_step = time.perf_counter(), run.step
    while run.step < config.max_steps:
        train_step(run, batches)
        progress.update(1)
        progress.set_postfix(loss=f"{run.loss:.4f}")
        step = run.step
        if step % config.log_every == 0 or step == config.max_steps:
            fps = frames_per_step * (step - start_step) / max(time.perf_counter() - start_time, 1e-9)
            accelerator.log({"loss": run.loss, "lr": run.lr_scheduler.get_last_lr()[0], "frames_per_second": fps},
                            step=step)
        if step % config.checkpoint_every == 0 or step == config.max_steps or step == stop_after:
            if accelerator.is_main_process:
                run.last_checkpoint = save_checkpoint(
                    Path(config.output), step, run.trained, run.ema, run.optimizer, run.lr_scheduler,
                    {"samples_seen": run.samples_seen, "loss": run.loss, "written_by_rank": accelerator.process_index,
                     "config": vars(config)},
                    config.keep_checkpoints)
            accelerator.wait_for_everyone()
        if config.validation_prompts and config.validation_every and step % config.validation_every == 0:
            _validate(accelerator, run.pipe, config, step, Path(config.output))
        if step == stop_after:
            break
    progress.close()
    elapsed = time.perf_counter() - start_time
    return {"seconds": elapsed, "frames_per_second": frames_per_step * (run.step - start_step) / max(elapsed, 1e-9)}


def train_step(run: Run, batches) -> None:
    """One optimizer step over gradient_accumulation_steps micro-batches, then the LR schedule and the EMA."""
    config, accelerator = run.config, run.accelerator
    device, rank = accelerator.device, accelerator.process_index
    for micro in range(config.gradient_accumulation_steps):
        batch = next(batches)
        generator = step_generator(config.seed, run.step, micro, rank)
        with accelerator.accumulate(run.unet, run.text_encoder):
            loss = _loss(batch, run.unet, run.pipe.vae, run.text_encoder, run.pipe.tokenizer, run.noise_scheduler,
                         generator, config.caption_dropout, device, config.train_text_encoder,
                         config.high_noise_fraction,
                         (config.keep_every, config.extrapolate_fraction) if config.task == "interpolate" else None,
                         _Upscaling(run.pipe, config) if config.task == "upscale" else None, config.loss_weighting)
            losses = accelerator.gather(loss.detach()[None])
            if not torch.isfinite(losses).all():
                raise TrainingDiverged(
                    f"loss became {losses.tolist()} at step {run.step + 1}; last good checkpoint: "
                    f"{run.last_checkpoint or 'none'}. Lower learning_rate or use bf16 instead of fp16."
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(list(run.trained.values()), config.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        run.loss = losses.mean().item()
    run.lr_scheduler.step()
    run.step += 1
    run.samples_seen += config.batch_size * config.gradient_accumulation_steps
    if run.ema is not None:
        update_ema(run.ema, run.trained, ema_decay(config.ema_decay, run.step))


def save_outputs(run: Run, output: Path) -> None:
    """The finished run (EMA weights if kept): temporal.safetensors and a complete model/ folder (or lora.safetensors
    alone), validation clips."""
    config, accelerator = run.config, run.accelerator
    if run.ema is not None:
        with torch.no_grad():
            for name, param in run.trained.items():
                param.copy_(run.ema[name])
    final = accelerator.unwrap_model(run.unet)
    if config.trainable == "lora":  # the LoRA alone, in diffusers' format; the base model stays as it was
        save_lora(final, output / "lora.safetensors")
    else:
        final.save_temporal_weights(output / "temporal.safetensors")
        trained_text_encoder = accelerator.unwrap_model(run.text_encoder) if config.train_text_encoder else None
        _save_model_folder(final, Path(config.model), output / "model", trained_text_encoder)
    if config.validation_prompts:
        _validate(accelerator, run.pipe, config, run.step, output)


class _Upscaling:
    """What the loss of a super-resolution model needs: its scale and fold, the low-res noise schedule, the ranges."""

    def __init__(self, pipe, config: TrainConfig):
        self.scale, self.fold, self.low_res_scheduler = pipe.scale, pipe.fold, pipe.low_res_scheduler
        self.blur_max, self.noise_max = config.lowres_blur_max, config.lowres_noise_max
        self.vae, self.residual = pipe.vae, pipe.config.residual

    def condition(self, batch, generator, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(b, 3 r^2, f, h, w) degraded, noise-augmented, folded low-res clips, their (b,) noise levels, and for a
        residual model the latents of the degraded clips' bicubic upsample (else None)."""
        from vidiff.data.degrade import degrade
        from vidiff.pipelines.upscale import bicubic_latents, fold_lowres

        count = len(batch["caption"])
        sigmas = (torch.rand(count, generator=generator) * self.blur_max).tolist()
        if "lowres" in batch:  # cached unblurred: blur at low resolution (sigma in high-res pixels / scale)
            lowres = torch.cat([degrade(batch["lowres"][i : i + 1], 1, s / self.scale) for i, s in enumerate(sigmas)])
        else:
            lowres = torch.cat([degrade(batch["video"][i : i + 1], self.scale, s) for i, s in enumerate(sigmas)])
        levels = torch.randint(0, self.noise_max + 1, (count,), generator=generator)
        noise = torch.randn(lowres.shape, generator=generator)
        with torch.no_grad():
            base = bicubic_latents(self.vae, lowres.to(device), self.scale) if self.residual else None
        noised = self.low_res_scheduler.add_noise(lowres.float(), noise, levels)
        return fold_lowres(noised, self.fold).to(device), levels.to(device), base


def _loss(batch, unet, vae, text_encoder, tokenizer, noise_scheduler, generator, dropout, device,
          train_text_encoder: bool = False, high_noise_fraction: float = 0.0, interpolation=None, upscaling=None,
          loss_weighting: str = "none"):
    """Diffusion loss for one batch of clips: (b, c, f, h, w) pixels or cached latent statistics.

    interpolation: (keep_every, extrapolate_fraction) to train a masked-frame model: each clip gets a mask of known
    frames, and the U-Net reads the noisy latents with the known frames' clean latents and the mask beside them.
    upscaling: a `_Upscaling` to train a super-resolution model: the U-Net reads the noisy latents with the
    degraded low-resolution clip beside them and the low-res noise level as its class label; a residual model's
    latents are those of the clip minus those of the degraded clip's bicubic upsample.
    loss_weighting: "velocity" rescales each sample's MSE to the v-target's (`velocity_weights`).
    """
    with torch.no_grad():
        if "video" in batch:
            frames = rearrange(batch["video"], "b c f h w -> (b f) c h w").to(device, vae.dtype)
            latents = vae.encode(frames).latent_dist.sample(generator=generator)
            latents = rearrange(latents, "(b f) c h w -> b c f h w", b=batch["video"].shape[0])
        else:
            eps = torch.randn(batch["mean"].shape, generator=generator)
            latents = (batch["mean"] + batch["std"] * eps).to(device)
        latents = latents.float() * vae.config.scaling_factor
        drop = (torch.rand(len(batch["caption"]), generator=generator) < dropout).tolist()
    captions = ["" if dropped else text for text, dropped in zip(batch["caption"], drop)]
    with torch.set_grad_enabled(train_text_encoder):
        texts = _encode(text_encoder, tokenizer, captions, device)

    labels = None
    if upscaling is not None:  # drawn before the noise, so a residual model's latents can become the residual
        condition, labels, base = upscaling.condition(batch, generator, device)
        latents = latents - base if base is not None else latents
    noise = torch.randn(latents.shape, generator=generator).to(device)
    timesteps = _timesteps(noise_scheduler.config.num_train_timesteps, latents.shape[0], high_noise_fraction,
                           generator).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if interpolation is not None:
        known = _known_frames(latents.shape[0], latents.shape[2], *interpolation, generator).to(device)
        noisy = torch.cat([noisy, masked_condition(latents, known)], dim=1)
    if upscaling is not None:
        noisy = torch.cat([noisy, condition.to(noisy.dtype)], dim=1)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    elif noise_scheduler.config.prediction_type == "sample":  # x0: the loss is the pixel / latent MSE itself
        target = latents
    else:
        target = noise
    extra = {} if labels is None else {"class_labels": labels}  # the upscaler's noise level
    prediction = unet(noisy, timesteps, texts, **extra).sample
    if loss_weighting == "none":
        return F.mse_loss(prediction.float(), target.float())
    errors = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(dim=1)  # (b,)
    return (errors * velocity_weights(noise_scheduler, timesteps)).mean()


def velocity_weights(noise_scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Per-sample factors that turn the squared error of the scheduler's prediction target into that of the
    v-target it implies (v = sqrt(a) eps - sqrt(1 - a) x0, a = alpha_bar_t; Salimans & Ho 2022). For a fixed noisy
    input, an error d in epsilon means an error d / sqrt(a) in v, and an error d in x0 one d / sqrt(1 - a): the
    factors are 1 / a, 1 / (1 - a) and 1 for v itself. With epsilon at SD's t = 999 that is ~213, at t = 0 ~1.
    They are capped at 1,000: with zero terminal SNR, epsilon at the last step (a = 0) says nothing about v."""
    alpha_bar = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float().clamp(1e-3, 1 - 1e-3)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return 1 / alpha_bar
    if prediction_type == "sample":
        return 1 / (1 - alpha_bar)
    return torch.ones_like(alpha_bar)


def _known_frames(count: int, num_frames: int, keep_every: list[int], extrapolate_fraction: float,
                  generator) -> torch.Tensor:
    """(count, f) bool masks: every k-th frame (k drawn from keep_every), or with `extrapolate_fraction` the first
    1-4 frames only (image animation and continuation)."""
    masks = []
    for _ in range(count):
        if torch.rand(1, generator=generator).item() < extrapolate_fraction:
            num_known = int(torch.randint(1, 5, (1,), generator=generator))
            masks.append(extrapolation_mask(num_frames, min(num_known, num_frames - 1)))
        else:
            masks.append(interpolation_mask(num_frames, keep_every[int(torch.randint(len(keep_every), (1,),
                                                                                      generator=generator))]))
    return torch.stack(masks)


def _timesteps(num_train_timesteps: int, count: int, high_noise_fraction: float, generator) -> torch.Tensor:
    """Uniform training timesteps; with `high_noise_fraction`, that share of them from the noisiest 10 % instead
    (extra draws only then, so runs without it keep their random stream)."""
    timesteps = torch.randint(0, num_train_timesteps, (count,), generator=generator)
    if high_noise_fraction:
        high = torch.randint(num_train_timesteps - num_train_timesteps // 10, num_train_timesteps, (count,),
                             generator=generator)
        timesteps = torch.where(torch.rand(count, generator=generator) < high_noise_fraction, high, timesteps)
    return timesteps


def _encode(text_encoder, tokenizer, captions: list[str], device) -> torch.Tensor:
    tokens = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    return text_encoder(tokens.input_ids.to(device))[0].float()


def checkpoint_model_folder(checkpoint: Path, source: Path, target: Path) -> Path:
    """A complete model folder from a checkpoint's EMA weights: `source`'s U-Net with the weights the run trained
    replaced, and `source`'s other components; for runs cut short (`train(..., stop_after=N)`) or killed."""
    from vidiff.models.video_unet import VideoUNet

    with loading(Path(source) / "unet"):
        unet = VideoUNet.from_pretrained(Path(source) / "unet")
    ema = load_checkpoint(Path(checkpoint))["ema"]
    names = {name for name, _ in unet.named_parameters()}
    if not ema or not set(ema) <= names:
        raise VidiffInputError(f"{checkpoint} holds no EMA weights for the U-Net of {source} (trained with ema: "
                               "false, or from another model)")
    state = unet.state_dict()
    state.update({name: value.to(state[name].dtype) for name, value in ema.items()})
    unet.load_state_dict(state)  # strict: every key of the U-Net, the EMA's in place of the trained ones
    _save_model_folder(unet, Path(source), Path(target))
    return Path(target)


def _save_model_folder(unet, source: Path, target: Path, text_encoder=None) -> None:
    """A complete video model folder: the trained U-Net (and text encoder, if it trained) plus the source model's
    other components."""
    with atomic_dir(target, overwrite=True, replaceable=is_model_folder) as tmp:
        unet.save_pretrained(tmp / "unet")
        if text_encoder is not None:
            text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        for name in (*COMPONENTS, *EXTRA_COMPONENTS):
            if not (tmp / name).exists() and (source / name).is_dir():
                shutil.copytree(source / name, tmp / name)
        write_model_index(tmp, component_classes(source), extra_from=read_index(source))


def _validate(accelerator, pipe, config: TrainConfig, step: int, output: Path) -> None:
    """Sample the validation prompts with the current weights and write them as GIFs (main process only)."""
    if not accelerator.is_main_process:
        return
    from vidiff.io.video import write_video

    unet = pipe.unet  # the module itself; accelerate wrapped it, not replaced it
    unet.eval()
    pipe.set_progress_bar_config(disable=True)
    for k, prompt in enumerate(config.validation_prompts):
        for seed in config.validation_seeds:
            frames = pipe(prompt, num_frames=config.num_frames, height=config.resolution, width=config.resolution,
                          num_inference_steps=config.validation_steps,
                          generator=torch.Generator().manual_seed(seed)).frames[0]
            write_video(frames, output / "validation" / f"step-{step:08d}-{k:02d}-seed{seed}.gif", fps=8,
                        metadata={"prompt": prompt, "seed": seed, "step": step}, overwrite=True)  # the run's own
    unet.train()


def _tracker() -> str | None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        logger.warning("tensorboard is not installed; training logs go to the progress bar only")
        return None
    return "tensorboard"
