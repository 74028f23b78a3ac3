"""Generation jobs: prompts (one, or a file of them) -> clips on disk with a JSON sidecar each.

Everything here that checks input runs before any model is loaded, so bad input fails in a second. Under
`accelerate launch` the jobs are dealt out by index across processes, so no clip is written twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidiff.io.video import SUPPORTED_OUTPUTS, WRITE_SUFFIXES

SCHEDULER_NAMES = ("ddim", "dpm++", "euler")  # text_to_video.SCHEDULERS' keys, without importing diffusers
DEFAULT_OUTPUT = "outputs/{slug}-{seed}.mp4"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default-model"
DEFAULT_GUIDANCE = 7.5  # Stable Diffusion's usual scale; a model folder may recommend its own (sampling.json)
SAMPLING_FILE = "sampling.json"  # optional, in a model folder: {"guidance": ...}, what that model samples best with


@dataclass
class Job:
    """One clip to generate; the fields a JSONL prompts file may set per line."""

    prompt: str
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
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        unknown = sorted(set(entry) - JOB_FIELDS)
        if unknown or not isinstance(entry.get("prompt"), str):
            raise ValueError(f"{path}:{number}: needs a string 'prompt'; unknown keys {unknown}; known: {sorted(JOB_FIELDS)}")
        jobs.append(Job(**{**defaults, **entry}))
    if not jobs:
        raise ValueError(f"prompts file {path} has no prompts")
    return jobs


def assign_seeds_and_outputs(jobs: list[Job], output: str | None, base_seed: int | None) -> list[Job]:
    """Give every job a seed (base seed + index, or random, always recorded) and its own output path."""
    if base_seed is None:
        base_seed = int(torch.randint(0, 2**31 - 1, ()).item())
    template = output or DEFAULT_OUTPUT
    if len(jobs) > 1 and "{" not in template:
        if Path(template).suffix.lower() in WRITE_SUFFIXES:
            raise ValueError(f"-o {template} names one file for {len(jobs)} prompts; give a folder or use {{index}}")
        template = str(Path(template) / "{index:03d}-{slug}.mp4")
    planned = []
    for index, job in enumerate(jobs):
        seed = job.seed if job.seed is not None else base_seed + index
        path = job.output or template.format(index=index, slug=slugify(job.prompt), seed=seed)
        planned.append(dataclasses.replace(job, seed=seed, output=path))
    paths = [job.output for job in planned]
    if len(set(paths)) != len(paths):
        raise ValueError("two prompts would write the same file; put {index} or {seed} in -o")
    return planned


def check_output(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output whose format is unknown or whose folder cannot be written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix and suffix not in WRITE_SUFFIXES:
        raise ValueError(f"unknown output format {suffix!r} in {path}; {SUPPORTED_OUTPUTS}")
    if suffix and path.is_dir():
        raise ValueError(f"output {path} is an existing folder, not a file")
    parent = path.parent if suffix else path
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise PermissionError(f"cannot write {path}: {existing} is not a writable folder")


def check_model_settings(model: str | os.PathLike, jobs: list[Job]) -> None:
    """Check frame counts and sizes against the model's saved configs, without loading any weights."""
    from vidiff.models.inflate import COMPONENTS, check_model_folder

    model = Path(model)
    check_model_folder(model, (*COMPONENTS, "unet"))
    unet = json.loads((model / "unet" / "config.json").read_text())
    if unet.get("_class_name") != "VideoUNet":
        raise ValueError(f"{model} is not a video model (unet is {unet.get('_class_name')}); run `vidiff inflate`")
    vae = json.loads((model / "vae" / "config.json").read_text())
    scale = 2 ** (len(vae["block_out_channels"]) - 1)
    for job in jobs:
        if not 1 <= job.num_frames <= unet["max_frames"]:
            raise ValueError(f"num_frames={job.num_frames} is outside 1..{unet['max_frames']} for {model}")
        for name in ("height", "width"):
            value = getattr(job, name)
            if value is not None and (value <= 0 or value % scale):
                raise ValueError(f"{name}={value} must be a positive multiple of {scale} for this model's VAE")
        if job.steps < 1:
            raise ValueError(f"steps={job.steps} must be at least 1")


def recommended_guidance(model: str | os.PathLike) -> float:
    """The guidance scale the model folder recommends in sampling.json, else DEFAULT_GUIDANCE."""
    path = Path(model) / SAMPLING_FILE
    if not path.is_file():
        return DEFAULT_GUIDANCE
    try:
        settings = json.loads(path.read_text())
        return float(settings.get("guidance", DEFAULT_GUIDANCE))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise ValueError(f"{path} must be a JSON object like {{\"guidance\": 1.5}}; fix or delete it") from None


def default_model() -> Path:
    if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            "this vidiff build ships no default model yet; build the stand-in with "
            "`python scripts/make_tiny_model.py tiny-video` and pass --model tiny-video"
        )
    return DEFAULT_MODEL_DIR


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto': fp16 on a GPU, fp32 on the CPU."""
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"unknown dtype {name!r}; choose auto, fp32, fp16 or bf16")
    return dtypes[name]


def run_jobs(pipe, jobs: list[Job], fps: int, scheduler: str, model: str, process_index: int = 0,
             num_processes: int = 1, writer=None, load_s: float | None = None, post=None) -> list[Path]:
    """Generate and write this process's share of `jobs` (every `num_processes`-th, from `process_index`).

    `post(frames, job) -> (frames, metadata)`, if given, runs the later cascade stages on each clip before writing;
    `fps` is the rate of what is written."""
    from vidiff import __version__

    if writer is None:
        from vidiff.io.video import write_video as writer
    written = []
    for job in jobs[process_index::num_processes]:
        start = time.perf_counter()
        generator = torch.Generator("cpu").manual_seed(job.seed)  # CPU noise: the same clip on any device
        frames = pipe(
            job.prompt, negative_prompt=job.negative_prompt, num_frames=job.num_frames, height=job.height,
            width=job.width, num_inference_steps=job.steps, guidance_scale=job.guidance, generator=generator,
        ).frames[0]
        sample_s = time.perf_counter() - start
        stages = {}
        if post is not None:
            frames, stages = post(frames, job)
        metadata = {
            **dataclasses.asdict(job), "scheduler": scheduler, "model": str(model), "vidiff_version": __version__,
            "num_frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
            "fps": fps, "device": str(pipe.device), "dtype": str(pipe.unet.dtype).removeprefix("torch."),
            "timings": {"sample_s": round(sample_s, 3), "load_s": None if load_s is None else round(load_s, 3),
                        **({"stages_s": round(time.perf_counter() - start - sample_s, 3)} if stages else {})},
            **stages,
        }
        written.append(Path(writer(frames, job.output, fps=fps, metadata=metadata)))
    return written


def slugify(text: str, limit: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "clip"
