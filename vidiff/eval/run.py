"""Evaluation on the shapes world: generate clips from every caption of a split, judge them from their pixels.

Three things can be judged with the same pixel judge (vidiff.eval.judge), so that their numbers compare:
- `evaluate_model`: a video model, `clips_per_combo` clips per colour-shape-direction combination;
- `evaluate_image_baseline`: the image model the video model was inflated from, each "clip" made of frames
  sampled independently (one image per frame, its own noise, the same caption). It knows colours and shapes but
  nothing of motion, so its direction accuracy sits near chance (25 %): the gap is what the temporal layers add;
- `evaluate_ground_truth`: rendered clips of the world itself, a check of the judge (it must score 100 %).

Every clip's noise (or render seed) depends only on (seed, combination, clip), where a combination is numbered by
its place in ALL_COMBOS: a clip does not change with the split, the batch size or the device, since noise is
drawn on the CPU. `write_report` writes `eval.json` (everything) and `eval.md` (tables) into a folder.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidiff.atomic import check_destination, write_text
from vidiff.data.shapes import ALL_COMBOS, COLOURS, DIRECTIONS, HELD_OUT, SHAPES, caption, combinations, render_clip
from vidiff.errors import VidiffInputError
from vidiff.eval.judge import judge_clip, summarize, to_markdown
from vidiff.model_folder import COMPONENTS, check_model_folder, component_config, vae_scale_factor
from vidiff.model_folder import check_video_model as check_model_configs

SPLITS = ("all", "train", "heldout")
REPORT_FILES = ("eval.json", "eval.md")  # what write_report writes into its folder
CHANCE = {"colour": 1 / len(COLOURS), "shape": 1 / len(SHAPES), "direction": 1 / len(DIRECTIONS)}

# A batch of work: (index of the combination in ALL_COMBOS, index of the clip within the combination)
Item = tuple[int, int]
# Sampler: a batch of items and their captions -> uint8 clips (n, f, h, w, 3)
Sampler = Callable[[list[Item], list[str]], np.ndarray]


# ---------------------------------------------------------------------------------------------------------------
# Checks, all before anything is loaded
# ---------------------------------------------------------------------------------------------------------------


def check_settings(clips_per_combo: int, split: str, num_frames: int, steps: int = 1, batch_size: int = 1,
                   guidance: float = 0.0) -> None:
    """Raise ValueError naming the first bad setting."""
    if split not in SPLITS:
        raise VidiffInputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    for name, value in (("clips_per_combo", clips_per_combo), ("num_frames", num_frames), ("steps", steps),
                        ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise VidiffInputError(f"{name}={value} must be a positive integer")
    if not math.isfinite(guidance) or guidance < 0:
        raise VidiffInputError(f"guidance={guidance} must be a finite number >= 0")


def check_video_model(model_dir: str | os.PathLike, num_frames: int, steps: int = 1) -> dict:
    """Check that `model_dir` is a video model that takes `num_frames` frames; returns its U-Net config."""
    return check_model_configs(model_dir, num_frames, steps=steps)


def check_image_model(model_dir: str | os.PathLike) -> dict:
    """Check that `model_dir` is a text-to-image Stable Diffusion folder; returns its U-Net config."""
    model_dir = Path(model_dir)
    check_model_folder(model_dir, (*COMPONENTS, "unet"))
    unet = json.loads((model_dir / "unet" / "config.json").read_text())
    if unet.get("_class_name") != "UNet2DConditionModel":
        raise VidiffInputError(f"{model_dir} is not an image model (its unet is a {unet.get('_class_name')}); the "
                               "baseline needs the Stable Diffusion folder the video model was inflated from")
    return unet


def check_device(device: str) -> None:
    import torch

    if device != "auto":
        try:
            torch.device(device)
        except RuntimeError:
            raise VidiffInputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:1, mps") from None


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse a report folder that is an existing file, sits below one that cannot be written, or already holds a
    report (unless `overwrite`)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"report folder {out_dir} is an existing file")
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise PermissionError(f"cannot write the report into {out_dir}: {existing} is not a writable folder")
    for name in REPORT_FILES:
        check_destination(out_dir / name, overwrite)


def frame_size(model_dir: str | os.PathLike) -> int:
    """The frame side in pixels a model samples by default: U-Net sample size times the VAE's downscale."""
    unet = component_config(model_dir, "unet")
    sample_size = unet["spatial_config"]["sample_size"] if "spatial_config" in unet else unet["sample_size"]
    return int(sample_size) * vae_scale_factor(component_config(model_dir, "vae"))


def eval_seed(seed: int, *indices: int) -> int:
    """An independent seed for (seed, combination, clip[, frame])."""
    return int(np.random.SeedSequence([seed, *indices]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------------------------
# The loop shared by all three
# ---------------------------------------------------------------------------------------------------------------


def _combo_index(split: str) -> list[int]:
    return [ALL_COMBOS.index(combo) for combo in combinations(split)]


def _evaluate(sample: Sampler, split: str, clips_per_combo: int, batch_size: int, progress: bool,
              desc: str) -> tuple[list[dict], list[dict], float]:
    """Sample and judge every clip of the split, `batch_size` clips per `sample` call.

    Returns (judge results in order, per-combination records, seconds spent).
    """
    from tqdm.auto import tqdm

    combo_ids = _combo_index(split)
    items = [(c, k) for c in combo_ids for k in range(clips_per_combo)]
    judged: dict[Item, dict] = {}
    start = time.perf_counter()
    with tqdm(total=len(combo_ids), desc=desc, unit="combo", disable=not progress) as bar:
        for first in range(0, len(items), batch_size):
            batch = items[first : first + batch_size]
            captions = [caption(*ALL_COMBOS[c]) for c, _ in batch]
            clips = sample(batch, captions)  # (n, f, h, w, 3) uint8
            for item, text, frames in zip(batch, captions, clips):
                judged[item] = judge_clip(frames, text)
            bar.update(sum(1 for c, k in batch if k == clips_per_combo - 1))  # combinations now complete
    seconds = time.perf_counter() - start

    results = [judged[item] for item in items]
    per_combo = []
    for c in combo_ids:
        clips = [judged[(c, k)] for k in range(clips_per_combo)]
        per_combo.append({
            "caption": caption(*ALL_COMBOS[c]),
            "heldout": ALL_COMBOS[c] in HELD_OUT,
            "n": clips_per_combo,
            **{m: float(np.mean([r[f"{m}_ok"] for r in clips])) for m in ("colour", "shape", "direction", "all")},
            "read": [[r["colour"], r["shape"], r["direction"]] for r in clips],  # what the judge saw, per clip
        })
    return results, per_combo, seconds


def _result(model: str, kind: str, settings: dict, results: list[dict], per_combo: list[dict],
            seconds: float) -> dict:
    return {
        "model": model,
        "kind": kind,
        "settings": settings,
        "summary": summarize(results),
        "per_combo": per_combo,
        "timings": {"total_s": round(seconds, 3), "per_clip_s": round(seconds / max(len(results), 1), 4)},
    }


# ---------------------------------------------------------------------------------------------------------------
# What can be judged
# ---------------------------------------------------------------------------------------------------------------


def evaluate_model(
    model_dir: str | os.PathLike,
    clips_per_combo: int = 8,
    split: str = "all",
    num_frames: int = 16,
    steps: int = 25,
    guidance: float = 7.5,
    seed: int = 0,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
    scheduler: str = "ddim",
) -> dict:
    """Generate `clips_per_combo` clips from the caption of every combination of `split` with a video model
    and judge them. Returns {model, kind, settings, summary (judge.summarize), per_combo, timings}.

    Clip (c, k) starts from noise seeded with eval_seed(seed, c, k); `batch_size` clips share a pipeline call.
    """
    import torch

    from vidiff.devices import pick_device, pick_dtype
    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    # 1. Check inputs
    check_settings(clips_per_combo, split, num_frames, steps, batch_size, guidance)
    check_video_model(model_dir, num_frames, steps)
    check_device(device)

    # 2. Load
    torch_device = pick_device(device)
    dtype = pick_dtype("auto", torch_device)
    pipe = TextToVideoPipeline.from_pretrained(model_dir, torch_dtype=dtype)
    pipe.set_scheduler(scheduler)
    pipe.to(torch_device)
    pipe.unet.set_attention_kernel("auto")

    # 3. Sample and judge, one generator per clip so that batching does not change the noise
    def sample(batch: list[Item], captions: list[str]) -> np.ndarray:
        generators = [torch.Generator("cpu").manual_seed(eval_seed(seed, c, k)) for c, k in batch]
        return pipe(captions, num_frames=num_frames, num_inference_steps=steps, guidance_scale=guidance,
                    generator=generators, output_type="np", show_progress=False).frames

    results, per_combo, seconds = _evaluate(sample, split, clips_per_combo, batch_size, progress, "eval")
    size = int(results[0]["height"])
    settings = dict(clips_per_combo=clips_per_combo, split=split, num_frames=num_frames, steps=steps,
                    guidance=guidance, seed=seed, batch_size=batch_size, scheduler=scheduler,
                    device=str(torch_device), dtype=str(dtype).removeprefix("torch."), size=size)
    return _result(str(model_dir), "video model", settings, results, per_combo, seconds)


def evaluate_image_baseline(
    image_model_dir: str | os.PathLike,
    clips_per_combo: int = 8,
    split: str = "all",
    num_frames: int = 16,
    steps: int = 25,
    guidance: float = 7.5,
    seed: int = 0,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
    scheduler: str = "ddim",
) -> dict:
    """The same evaluation on the uninflated image model: each clip is `num_frames` images sampled independently
    (frame t of clip (c, k) from noise seeded with eval_seed(seed, c, k, t)) from the same caption.

    `batch_size` counts clips, as for `evaluate_model`, so a call denoises as many frames in both.
    """
    import torch
    from diffusers import StableDiffusionPipeline

    from vidiff.devices import pick_device, pick_dtype
    from vidiff.pipelines.text_to_video import SCHEDULERS
    from vidiff.weights import loading

    # 1. Check inputs
    check_settings(clips_per_combo, split, num_frames, steps, batch_size, guidance)
    check_image_model(image_model_dir)
    check_device(device)
    if scheduler not in SCHEDULERS:
        raise VidiffInputError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")

    # 2. Load, without the safety checker (it would black out frames, which the judge reads as "no object")
    torch_device = pick_device(device)
    dtype = pick_dtype("auto", torch_device)
    dtype_kwargs = {} if dtype == torch.float32 else {"torch_dtype": dtype}  # the default; newer diffusers warn
    with loading(image_model_dir):
        pipe = StableDiffusionPipeline.from_pretrained(image_model_dir, safety_checker=None,
                                                       requires_safety_checker=False, **dtype_kwargs)
    scheduler_cls, options = SCHEDULERS[scheduler]
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **options)
    pipe.to(torch_device)
    pipe.set_progress_bar_config(disable=True)

    # 3. Sample every frame of every clip of the batch as one batch of images
    def sample(batch: list[Item], captions: list[str]) -> np.ndarray:
        generators = [torch.Generator("cpu").manual_seed(eval_seed(seed, c, k, t))
                      for c, k in batch for t in range(num_frames)]
        prompts = [text for text in captions for _ in range(num_frames)]
        images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
                      output_type="np").images  # float (n * f, h, w, 3) in [0, 1]
        images = (np.asarray(images) * 255).round().astype(np.uint8)
        return images.reshape(len(batch), num_frames, *images.shape[1:])

    results, per_combo, seconds = _evaluate(sample, split, clips_per_combo, batch_size, progress, "baseline")
    settings = dict(clips_per_combo=clips_per_combo, split=split, num_frames=num_frames, steps=steps,
                    guidance=guidance, seed=seed, batch_size=batch_size, scheduler=scheduler,
                    device=str(torch_device), dtype=str(dtype).removeprefix("torch."),
                    size=int(results[0]["height"]))
    return _result(str(image_model_dir), "image model, frames sampled independently", settings, results,
                   per_combo, seconds)


def evaluate_ground_truth(
    clips_per_combo: int = 8,
    split: str = "all",
    num_frames: int = 16,
    size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Judge rendered clips of the shapes world (clip (c, k) rendered with seed eval_seed(seed, c, k)): a check
    of the judge and of the wiring, which must score 100 %. `size`: the frame side, e.g. `frame_size(model)`."""
    check_settings(clips_per_combo, split, num_frames)
    if not isinstance(size, int) or size < 8:
        raise VidiffInputError(f"size={size} must be an integer of at least 8 pixels")

    def sample(batch: list[Item], captions: list[str]) -> np.ndarray:
        return np.stack([render_clip(*ALL_COMBOS[c], num_frames=num_frames, size=size, seed=eval_seed(seed, c, k))
                         for c, k in batch])

    results, per_combo, seconds = _evaluate(sample, split, clips_per_combo, 1, progress, "ground truth")
    settings = dict(clips_per_combo=clips_per_combo, split=split, num_frames=num_frames, seed=seed, size=size)
    return _result("ground truth (rendered clips)", "ground truth", settings, results, per_combo, seconds)


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _section(result: dict) -> list[str]:
    settings = ", ".join(f"{key}={value}" for key, value in result["settings"].items())
    summary = result["summary"]
    counts = (f"{len(result['per_combo'])} combinations x {result['settings']['clips_per_combo']} clips = "
              f"{summary['all']['n']} clips ({summary['seen']['n']} seen, {summary['heldout']['n']} held out)")
    timing = f"{result['timings']['total_s']:.1f} s ({result['timings']['per_clip_s']:.3f} s per clip)"
    return [f"- model: `{result['model']}` ({result['kind']})", f"- settings: {settings}", f"- clips: {counts}",
            f"- time: {timing}", "", to_markdown(summary)]


def report_markdown(result: dict, baseline: dict | None = None) -> str:
    """The report as markdown: header, summary table, the baseline's if given, then one row per combination."""
    chance = ", ".join(f"{name} {_percent(value)}" for name, value in CHANCE.items())
    lines = ["# vidiff evaluation on the shapes world", "", *_section(result),
             f"Chance level: {chance}. Held out: combinations never seen in training.", ""]
    if baseline is not None:
        lines += ["## Baseline: the image model, every frame sampled on its own", "", *_section(baseline)]
        gaps = ", ".join(
            f"{m} {100 * (result['summary']['all'][m] - baseline['summary']['all'][m]):+.1f} points"
            for m in ("colour", "shape", "direction", "all")
        )
        lines += [f"Video model minus baseline (all clips): {gaps}.", ""]
    lines += ["## Per combination", "", "| caption | held out | colour | shape | direction | all three |",
              "|---|:---:|---:|---:|---:|---:|"]
    for row in result["per_combo"]:
        cells = " | ".join(_percent(row[m]) for m in ("colour", "shape", "direction", "all"))
        lines.append(f"| {row['caption']} | {'yes' if row['heldout'] else ''} | {cells} |")
    return "\n".join(lines) + "\n"


def write_report(result: dict, out_dir: str | os.PathLike, baseline: dict | None = None,
                 overwrite: bool = False) -> tuple[Path, Path]:
    """Write `eval.json` (the result, with the baseline's under "baseline") and `eval.md` into `out_dir`,
    each atomically; an existing report is replaced only with `overwrite`. A baseline may also come inside `result`
    as result["baseline"]. Returns both paths."""
    out_dir = Path(out_dir)
    baseline = baseline if baseline is not None else result.get("baseline")
    document = {**result, "baseline": baseline} if baseline is not None else result
    check_out_dir(out_dir, overwrite)  # before writing either file, so that none is written beside an old one
    json_path = write_text(out_dir / "eval.json", json.dumps(document, indent=2) + "\n", overwrite=overwrite)
    md_path = write_text(out_dir / "eval.md", report_markdown(result, baseline), overwrite=overwrite)
    return json_path, md_path
