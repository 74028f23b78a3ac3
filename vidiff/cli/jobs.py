"""`vidiff generate`'s jobs: prompts (one, or a file of them) -> clips on disk with a JSON sidecar each.

Everything here that checks input runs before any model is loaded, so bad input fails in a second. Under
`accelerate launch` the jobs are dealt out by index across processes, so no clip is written twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidiff.config import validate_fields
from vidiff.errors import VidiffInputError, check_free_space
from vidiff.io.video import SUPPORTED_OUTPUTS, WRITE_SUFFIXES, check_video_destination, estimated_bytes, video_suffix
from vidiff.model_folder import check_video_model, component_config, vae_scale_factor

SCHEDULER_NAMES = ("ddim", "dpm++", "euler")  # text_to_video.SCHEDULERS' keys, without importing diffusers
DEFAULT_OUTPUT = "outputs/{slug}-{seed}.mp4"


@dataclass
class Job:
    """One clip to generate; the fields a JSONL prompts file may set per line."""

    prompt: str | dict[int, str]  # a dict {frame: prompt}: prompt travel
    negative_prompt: str | None = None
    seed: int | None = None
    num_frames: int = 16
    height: int | None = None
    width: int | None = None
    steps: int = 25
    guidance: float = 7.5
    output: str | None = None


JOB_FIELDS = {field.name for field in dataclasses.fields(Job)}


def read_prompts_file(path: str | os.PathLike, defaults: dict[str, Any]) -> list[Job]:
    """One prompt per line, or JSONL objects with `prompt` and any `Job` field. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    jobs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not line.startswith("{"):
            jobs.append(Job(**{**defaults, "prompt": line}))
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise VidiffInputError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        unknown = sorted(set(entry) - JOB_FIELDS)
        if unknown or not isinstance(entry.get("prompt"), str):
            raise VidiffInputError(f"{path}:{number}: needs a string 'prompt'; unknown keys {unknown}; known: "
                                   f"{sorted(JOB_FIELDS)}")
        entry = validate_fields(Job, entry, strict=True, where=f"{path}:{number}: ")  # JSON has types: no guessing
        jobs.append(Job(**{**defaults, **entry}))
    if not jobs:
        raise VidiffInputError(f"prompts file {path} has no prompts")
    return jobs


def assign_seeds_and_outputs(jobs: list[Job], output: str | None, base_seed: int | None) -> list[Job]:
    """Give every job a seed (base seed + index, or random, always recorded) and its own output path."""
    if base_seed is None:
        base_seed = int(torch.randint(0, 2**31 - 1, ()).item())
    template = output or DEFAULT_OUTPUT
    if len(jobs) > 1 and "{" not in template:
        if Path(template).suffix.lower() in WRITE_SUFFIXES:
            raise VidiffInputError(f"-o {template} names one file for {len(jobs)} prompts; give a folder or use "
                                   f"{{index}}")
        template = str(Path(template) / "{index:03d}-{slug}.mp4")
    planned = []
    for index, job in enumerate(jobs):
        seed = job.seed if job.seed is not None else base_seed + index
        text = job.prompt if isinstance(job.prompt, str) else next(iter(job.prompt.values()))
        path = job.output or template.format(index=index, slug=slugify(text), seed=seed)
        planned.append(dataclasses.replace(job, seed=seed, output=path))
    paths = [job.output for job in planned]
    if len(set(paths)) != len(paths):
        raise VidiffInputError("two prompts would write the same file; put {index} or {seed} in -o")
    return planned


def check_output(path: str | os.PathLike, overwrite: bool | None = None) -> None:
    """Refuse, before any work, an output whose format is unknown or whose folder cannot be written, and (unless
    `overwrite` is None) one that exists but may not be replaced."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix and suffix not in WRITE_SUFFIXES:
        raise VidiffInputError(f"unknown output format {suffix!r} in {path}; {SUPPORTED_OUTPUTS}")
    if suffix and path.is_dir():
        raise VidiffInputError(f"output {path} is an existing folder, not a file")
    parent = path.parent if suffix else path
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise PermissionError(f"cannot write {path}: {existing} is not a writable folder")
    if overwrite is not None:
        check_video_destination(path, overwrite)


def check_room(model: str | os.PathLike, jobs: list[Job], factor: int = 1, scale: int = 1) -> None:
    """Before any sampling: refuse when the outputs' file systems have less room than the clips will take (each
    clip's frames after interpolation by `factor` and upscaling by `scale`, as `estimated_bytes` counts them)."""
    unet, vae = component_config(model, "unet"), component_config(model, "vae")
    side = unet["spatial_config"]["sample_size"] * vae_scale_factor(vae)  # the model's own frame size
    needed: dict[Path, int] = {}
    for job in jobs:
        frames = (job.num_frames - 1) * factor + 1 if factor > 1 else job.num_frames
        height, width = (job.height or side) * scale, (job.width or side) * scale
        folder = Path(job.output).parent if Path(job.output).suffix else Path(job.output)
        needed[folder] = needed.get(folder, 0) + estimated_bytes(frames, height, width, video_suffix(job.output))
    for folder, size in needed.items():
        check_free_space(folder, size)


def check_model_settings(model: str | os.PathLike, jobs: list[Job], long_clips: bool = False) -> None:
    """Check frame counts and sizes against the model's saved configs, without loading any weights. long_clips:
    clips longer than the model's max_frames run in FreeNoise windows, so only their sizes are checked."""
    max_frames = check_video_model(model)["max_frames"]
    for job in jobs:
        frames = min(job.num_frames, max_frames) if long_clips and job.num_frames >= 1 else job.num_frames
        check_video_model(model, frames, job.height, job.width, job.steps)


def run_jobs(pipe, jobs: list[Job], fps: float, scheduler: str, model: str, process_index: int = 0,
             num_processes: int = 1, writer=None, load_s: float | None = None, overwrite: bool = False,
             record: dict | None = None, **stages) -> list[Path]:
    """Generate and write this process's share of `jobs` (every `num_processes`-th, from `process_index`) with a
    `VideoCascadePipeline`; `stages`: its interpolate / upscale settings and any other keyword of the call (an
    `image`, a `video` and its `strength`); `record`: more for the sidecar. `fps` is the base frames' rate. An
    existing output is replaced only with `overwrite`."""
    from vidiff import __version__

    if writer is None:
        from vidiff.io.video import write_video as writer
    written = []
    for job in jobs[process_index::num_processes]:
        generator = torch.Generator("cpu").manual_seed(job.seed)  # CPU noise: the same clip on any device
        out = pipe(job.prompt, negative_prompt=job.negative_prompt, num_frames=job.num_frames, height=job.height,
                   width=job.width, num_inference_steps=job.steps, guidance_scale=job.guidance, generator=generator,
                   fps=fps, **stages)
        frames, meta = out.frames[0], out.metadata[0]
        factor = meta.get("interpolation", {}).get("factor", 1)
        seconds = {name: meta[name].pop("seconds") for name in ("base", "interpolation", "upscale") if name in meta}
        stage_s = sum(value for name, value in seconds.items() if name != "base")
        # each stage's record when later stages ran, or when the base's says more (an input, FreeNoise windows)
        staged = len(seconds) > 1 or set(meta["base"]) - {"frames", "fps", "size"}
        metadata = {
            **dataclasses.asdict(job), **(record or {}), "scheduler": scheduler, "model": str(model),
            "vidiff_version": __version__,
            "num_frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
            "fps": fps * factor, "device": str(pipe.device), "dtype": str(pipe.base.unet.dtype).removeprefix("torch."),
            "timings": {"sample_s": seconds["base"], "load_s": None if load_s is None else round(load_s, 3),
                        **({"stages_s": round(stage_s, 3)} if len(seconds) > 1 else {})},
            **({name: meta[name] for name in ("base", "interpolation", "upscale") if name in meta} if staged else {}),
        }
        written.append(Path(writer(frames, job.output, fps=fps * factor, metadata=metadata, overwrite=overwrite)))
    return written


def slugify(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "clip"
