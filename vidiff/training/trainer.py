"""Fine-tune a video model on a folder of videos (captions optional), single process or under `accelerate launch`.

The objective is the latent diffusion loss of the image model, on clips: encode frames with the frozen VAE, add
noise at a random timestep, predict the noise (or v, following the scheduler config) with the video U-Net.
By default only the temporal layers train (AnimateDiff / Make-A-Video); `trainable: all | spatial` are there for
building image models from scratch, as the tiny default does.

Exact resume: every random draw in a step comes from a generator seeded by (seed, step, micro-batch, process), and
the data position is the number of samples consumed, so a resumed run repeats the straight run bit for bit.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
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
from vidiff.models.temporal import temporal_named_parameters
from vidiff.training.checkpoints import load_checkpoint, save_checkpoint
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
    """Parameters to train, by name: 'temporal' (the default), 'all', or 'spatial' (everything not temporal)."""
    temporal = dict(temporal_named_parameters(unet))
    if mode == "temporal":
        return temporal
    everything = dict(unet.named_parameters())
    return everything if mode == "all" else {k: v for k, v in everything.items() if k not in temporal}


def train(config: TrainConfig, resume: bool | str = False, stop_after: int | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) training; returns the run summary also written to `train_summary.json`.

    stop_after: end right after that step's checkpoint, as a killed run would (for tests and time-boxed runs).
    overwrite: start over in an output folder that holds a run (`vidiff.training.resume.prepare_run`).
    """
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from vidiff.data.video_folder import VideoFolderDataset
    from vidiff.pipelines.text_to_video import TextToVideoPipeline, set_conv_layout

    config.check()
    output = Path(config.output)

    # 1. Accelerator, models
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=_tracker(),
                              project_dir=str(output), gradient_accumulation_steps=config.gradient_accumulation_steps)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    checkpoint = prepare_run(config, resume, overwrite, accelerator.is_main_process)  # before loading anything
    check_frame_size(config.model, resolution=config.resolution)
    pipeline_class = TextToVideoPipeline
    if config.task == "upscale":
        from vidiff.pipelines.upscale import UpscalePipeline as pipeline_class
    pipe = pipeline_class.from_pretrained(config.model, inflate_image_model=True)
    if config.task == "interpolate" and pipe.unet.unet.config.in_channels == pipe.vae.config.latent_channels:
        pipe.unet = widen_conv_in(pipe.unet)  # a base video model: add the masked-frame inputs (zero at start)
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    if config.task == "interpolate" and unet.unet.config.in_channels != 2 * vae.config.latent_channels + 1:
        raise VidiffInputError(f"{config.model} has a U-Net with {unet.unet.config.in_channels} input channels; "
                               "interpolation needs a base video model or an interpolation model")
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    frozen_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    for model in (vae, text_encoder):  # nn.Module.to: diffusers' .to(dtype) warns about nothing here
        torch.nn.Module.to(model.requires_grad_(False).eval(), device, frozen_dtype)
    unet.check_num_frames(config.num_frames)
    trained = trainable_parameters(unet, config.trainable)
    if config.train_text_encoder:  # trained in fp32 like the U-Net's trained weights; names kept apart by a prefix
        text_encoder.to(device, torch.float32).train()
        trained |= {f"{TEXT_ENCODER_PREFIX}{k}": p.requires_grad_(True) for k, p in text_encoder.named_parameters()}
    unet.requires_grad_(False)
    for param in trained.values():
        param.requires_grad_(True)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if accelerator.is_main_process:
        check_room_for_run(config, trained)  # before reading data: checkpoints and the final model must fit

    # 2. Data: bad files are skipped and counted by the dataset; all-bad stops here, before training
    dataset = VideoFolderDataset(config.data, num_frames=config.num_frames, resolution=config.resolution,
                                 frame_stride=config.frame_stride, target_fps=config.target_fps,
                                 random_crop=config.random_crop, short_videos=config.short_videos, seed=config.seed)
    data_summary = dataset.summary()
    if config.cache_latents:
        fixed = VideoFolderDataset(config.data, num_frames=config.num_frames, resolution=config.resolution,
                                   frame_stride=config.frame_stride, target_fps=config.target_fps,
                                   short_videos=config.short_videos, train=False, seed=config.seed)
        with torch.no_grad():
            dataset = LatentCache(fixed, vae, device, lowres_scale=getattr(pipe, "scale", None))

    # 3. Optimizer, LR schedule, EMA
    fast = {k for k in trained if k.startswith("unet.conv_in.")} if config.conv_in_lr_scale != 1 else set()
    groups = [{"params": [p for k, p in trained.items() if k not in fast]}]
    if fast:  # conv_in's new condition inputs start at zero: let them catch up
        groups.append({"params": [trained[k] for k in sorted(fast)],
                       "lr": config.learning_rate * config.conv_in_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_steps)
    unet.to(device)
    set_conv_layout(unet, device)  # the layout sampling uses on this device
    ema = {k: v.detach().clone().float() for k, v in trained.items()} if config.ema else None

    # 4. Resume
    step, samples_seen = 0, 0
    if checkpoint is not None:
        saved = load_checkpoint(checkpoint)
        check_checkpoint_fits(saved, trained, optimizer, checkpoint)
        with torch.no_grad():
            for name, param in trained.items():
                param.copy_(saved["params"][name])
        if ema is not None and saved["ema"] is not None:
            ema = {k: v.float().to(device) for k, v in saved["ema"].items()}
        optimizer.load_state_dict(saved["optimizer"])
        lr_scheduler.load_state_dict(saved["lr_scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        step, samples_seen = saved["state"]["step"], saved["state"]["samples_seen"]
        accelerator.print(f"resumed from {checkpoint} at step {step}")

    sampler = ClipSampler(len(dataset), config.seed, rank, world, start=samples_seen)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                                         num_workers=config.num_workers)
    unet.train()
    if config.train_text_encoder:  # prepared too, so that its gradients are averaged across processes
        unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    else:
        unet, optimizer = accelerator.prepare(unet, optimizer)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        record_run(output, config, checkpoint, step)
        accelerator.init_trackers("vidiff")

    # 5. Training loop
    batches = iter(loader)
    progress = tqdm(total=config.max_steps, initial=step, desc="training", disable=not accelerator.is_main_process)
    frames_per_step = config.batch_size * config.num_frames * world * config.gradient_accumulation_steps
    loss_value, start_time, start_step, last_checkpoint = float("nan"), time.perf_counter(), step, checkpoint
    while step < config.max_steps:
        for micro in range(config.gradient_accumulation_steps):
            batch = next(batches)
            generator = step_generator(config.seed, step, micro, rank)
            with accelerator.accumulate(unet, text_encoder):
                loss = _loss(batch, unet, vae, text_encoder, tokenizer, noise_scheduler, generator,
                             config.caption_dropout, device, config.train_text_encoder, config.high_noise_fraction,
                             (config.keep_every, config.extrapolate_fraction) if config.task == "interpolate" else None,
                             _Upscaling(pipe, config) if config.task == "upscale" else None, config.loss_weighting)
                losses = accelerator.gather(loss.detach()[None])
                if not torch.isfinite(losses).all():
                    raise TrainingDiverged(
                        f"loss became {losses.tolist()} at step {step + 1}; last good checkpoint: "
                        f"{last_checkpoint or 'none'}. Lower learning_rate or use bf16 instead of fp16."
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(list(trained.values()), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_value = losses.mean().item()
        lr_scheduler.step()
        step += 1
        samples_seen += config.batch_size * config.gradient_accumulation_steps
        if ema is not None:
            _update_ema(ema, trained, _ema_decay(config.ema_decay, step))
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}")

        if step % config.log_every == 0 or step == config.max_steps:
            elapsed = time.perf_counter() - start_time
            fps = frames_per_step * (step - start_step) / max(elapsed, 1e-9)
            accelerator.log({"loss": loss_value, "lr": lr_scheduler.get_last_lr()[0], "frames_per_second": fps},
                            step=step)
        if step % config.checkpoint_every == 0 or step == config.max_steps or step == stop_after:
            if accelerator.is_main_process:
                last_checkpoint = save_checkpoint(
                    output, step, trained, ema, optimizer, lr_scheduler,
                    {"samples_seen": samples_seen, "loss": loss_value, "written_by_rank": rank, "config": vars(config)},
                    config.keep_checkpoints)
            accelerator.wait_for_everyone()
        if config.validation_prompts and config.validation_every and step % config.validation_every == 0:
            _validate(accelerator, pipe, config, step, output)
        if step == stop_after:
            break
    progress.close()
    elapsed = time.perf_counter() - start_time

    # 6. Final outputs: temporal weights, a full model folder, validation clips, the summary
    summary = {
        "steps": step,
        "max_steps": config.max_steps,
        "final_loss": loss_value,
        "frames_per_second": frames_per_step * (step - start_step) / max(elapsed, 1e-9),
        "seconds": elapsed,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "videos": data_summary["videos"],
        "short_videos_strided": data_summary["short_strided"],  # shorter than one clip: read at a smaller stride
        "skipped_files": data_summary["skipped_files"],
        "trainable": config.trainable,
        "train_text_encoder": config.train_text_encoder,
        "trainable_parameters": sum(p.numel() for p in trained.values()),
        "latent_cache": config.cache_latents,
    }
    if accelerator.is_main_process and step == config.max_steps:
        if ema is not None:
            with torch.no_grad():
                for name, param in trained.items():
                    param.copy_(ema[name])
        final = accelerator.unwrap_model(unet)
        final.save_temporal_weights(output / "temporal.safetensors")
        trained_text_encoder = accelerator.unwrap_model(text_encoder) if config.train_text_encoder else None
        _save_model_folder(final, Path(config.model), output / "model", trained_text_encoder)
        if config.validation_prompts:
            _validate(accelerator, pipe, config, step, output)
    if accelerator.is_main_process:
        write_text(output / "train_summary.json", json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary


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


def _ema_decay(decay: float, step: int) -> float:
    """Warm-up as in diffusers' EMAModel: min(decay, (1 + step) / (10 + step))."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def _update_ema(ema: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter], decay: float) -> None:
    for name, param in params.items():
        ema[name].mul_(decay).add_(param.detach().float(), alpha=1 - decay)


def checkpoint_model_folder(checkpoint: Path, source: Path, target: Path) -> Path:
    """A complete model folder from a checkpoint's EMA weights: `source`'s U-Net with the weights the run trained
    replaced, and `source`'s other components; for runs cut short (`train(..., stop_after=N)`) or killed."""
    from vidiff.models.video_unet import VideoUNet

    with loading(Path(source) / "unet"):
        unet = VideoUNet.from_pretrained(Path(source) / "unet")
    ema = load_checkpoint(Path(checkpoint))["ema"]
    names = {name for name, _ in unet.named_parameters()}
    if not ema or not set(ema) <= names:
        raise VidiffInputError(f"{checkpoint} holds no EMA weights for the U-Net of {source} (trained with ema: false, "
                               "or from another model)")
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
