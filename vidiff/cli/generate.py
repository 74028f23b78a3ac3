"""`vidiff generate`: prompts in, clips out, through `VideoCascadePipeline` (parse, check, call, write)."""

from __future__ import annotations

import argparse
import sys
import time

from vidiff.cli.clip_options import (add_lora_option, add_window_options, check_loras, load_cascade,
                                     read_prompt_travel, settle_device, window_settings)
from vidiff.cli.common import CHECKS, LIBRARIES, add_device, add_overwrite, add_progress, model_or_default
from vidiff.errors import VidiffInputError
from vidiff.process import import_quickly


def add_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate video clips from text prompts",
        description="Generate a clip from a prompt and write it as MP4, GIF, WebM or a folder of PNG frames "
        "(picked by the output's extension), with a JSON sidecar that records everything needed to reproduce it. "
        "Under `accelerate launch`, a prompts file is split across the processes.",
    )
    p.add_argument("prompt", nargs="?", help="the text prompt (or use --prompts-file or --prompt-travel)")
    p.add_argument("-o", "--output", help="output path; .mp4 .gif .webm .mkv (lossless), or a folder for PNG frames. "
                   "May use {index} {slug} {seed}. Default: outputs/{slug}-{seed}.mp4")
    p.add_argument("--model", help="video model folder (default: the model shipped with vidiff)")
    p.add_argument("--prompts-file", help="one prompt per line, or JSONL with 'prompt' and per-prompt "
                   "seed, negative_prompt, num_frames, height, width, steps, guidance, output")
    p.add_argument("--prompt-travel", metavar="FILE.json", help="a prompt per keyframe, a JSON object like "
                   "{\"0\": \"a red circle moving right\", \"24\": \"a blue circle moving right\"}; the text "
                   "embeddings of the frames between keyframes are interpolated")
    p.add_argument("--negative-prompt", help="what to steer away from (classifier-free guidance)")
    p.add_argument("--num-frames", type=int, default=16, help="frames per clip (default 16); above the model's "
                   "max_frames the clip is sampled in sliding windows (FreeNoise)")
    add_window_options(p)
    add_lora_option(p)
    p.add_argument("--height", type=int, help="frame height in pixels (default: the model's)")
    p.add_argument("--width", type=int, help="frame width in pixels (default: the model's)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's "
                   "sampling.json recommendation, else 7.5; the shipped tiny model recommends 1.5)")
    p.add_argument("--scheduler", default="ddim", help="ddim (default), dpm++ or euler")
    p.add_argument("--seed", type=int, help="seed of the first clip (then +1 per prompt); random if not given, "
                   "and always written to the sidecar")
    p.add_argument("--fps", type=int, default=8, help="frames per second of the generated frames (default 8); "
                   "with --interpolate K the clip is written at K times this")
    p.add_argument("--interpolate", type=int, metavar="K", help="fill in frames with the model's interpolation stage: "
                   "N frames -> (N - 1) * K + 1 (default: the model's cascade.json, 4 for the shipped model; 1: off)")
    p.add_argument("--interpolate-steps", type=int, help="denoising steps of each interpolation window (default: "
                   "the stage's cascade.json recommendation, else 10)")
    p.add_argument("--upscale", type=int, metavar="S", help="then raise the resolution S times with the model's "
                   "super-resolution stage (default: the model's cascade.json, 2 for the shipped model; 1: off)")
    p.add_argument("--upscale-steps", type=int, help="denoising steps of the upscaler (default: the stage's "
                   "cascade.json recommendation, else 25)")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16")
    add_overwrite(p)
    add_device(p)
    p.add_argument("--cpu-offload", action="store_true", help="keep models on the CPU until used (small GPUs)")
    p.add_argument("--compile", action="store_true", help="run the base U-Net through torch.compile (inductor). "
                   "The first clip pays for compiling (about a minute at SD 1.5 size on an H200, minutes on a CPU), "
                   "so it pays off over many clips; measured speed-ups are in BENCHMARKS.md")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores). On a CPU that is busy "
                   "with other work, --threads 1 avoids OpenMP slowdowns")
    add_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import_quickly(CHECKS)

    # 1. Check everything that can be checked without loading a model
    model, jobs, stages, windows = check_inputs(args)
    device, dtype = settle_device(args)
    loras, lora_record = check_loras(args)

    # 2. Load the cascade
    import_quickly(LIBRARIES)
    from accelerate import PartialState

    state = PartialState()
    load_start = time.perf_counter()
    pipe = load_cascade(args, model, stages, device, dtype, state, loras=loras)
    if windows:
        pipe.enable_free_noise(**windows)
    load_s = time.perf_counter() - load_start

    # 3. Generate and write this process's share of the jobs
    from vidiff.cli.jobs import run_jobs

    written = run_jobs(pipe, jobs, fps=args.fps, scheduler=args.scheduler, model=str(model),
                       process_index=state.process_index, num_processes=state.num_processes, load_s=load_s,
                       interpolate=stages["interpolate"], upscale=stages["upscale"],
                       interpolate_steps=args.interpolate_steps, upscale_steps=args.upscale_steps,
                       overwrite=args.overwrite, record=lora_record)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} clip(s) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def check_inputs(args: argparse.Namespace):
    """(model folder, jobs with seeds and outputs, {"interpolate": K, "upscale": S}, FreeNoise window options or
    None), all checked against the model's configs; no weights are loaded."""
    from vidiff.cli import jobs as gen
    from vidiff.config import check_seed
    from vidiff.model_folder import recommended_guidance

    if sum(value is not None for value in (args.prompt, args.prompts_file, args.prompt_travel)) != 1:
        raise VidiffInputError("give exactly one of PROMPT, --prompts-file or --prompt-travel")
    if args.scheduler not in gen.SCHEDULER_NAMES:
        raise VidiffInputError(f"unknown scheduler {args.scheduler!r}; choose one of {', '.join(gen.SCHEDULER_NAMES)}")
    if args.fps <= 0:
        raise VidiffInputError(f"--fps {args.fps} must be positive")
    check_seed(args.seed, "--seed")
    model = model_or_default(args.model)
    guidance = args.guidance if args.guidance is not None else recommended_guidance(model)
    defaults = dict(negative_prompt=args.negative_prompt, num_frames=args.num_frames, height=args.height,
                    width=args.width, steps=args.steps, guidance=guidance)
    if args.prompts_file:
        jobs = gen.read_prompts_file(args.prompts_file, defaults)
    else:
        prompt = args.prompt if args.prompt_travel is None else read_prompt_travel(args.prompt_travel, args.num_frames)
        jobs = [gen.Job(prompt=prompt, **defaults)]
    jobs = gen.assign_seeds_and_outputs(jobs, args.output, args.seed)
    for job in jobs:
        check_seed(job.seed, f"seed of {job.prompt!r}")
        gen.check_output(job.output, args.overwrite)
    windows = window_settings(args, model, max(job.num_frames for job in jobs), "generate")
    gen.check_model_settings(model, jobs, long_clips=windows is not None)
    stages = check_stages(args, model, jobs)
    gen.check_room(model, jobs, stages["interpolate"], stages["upscale"])
    return model, jobs, stages, windows


def check_stages(args: argparse.Namespace, model, jobs) -> dict:
    """The interpolation factor and upscale scale this run uses, checked against the cascade's configs."""
    from vidiff.pipelines.cascade import (interpolation_settings, interpolation_stage, read_cascade, upscale_settings,
                                          upscaler_geometry)
    from vidiff.pipelines.upscale import upscale_passes

    stages = read_cascade(model)
    factor = args.interpolate if args.interpolate is not None else getattr(stages.get("interpolation"), "default", 1)
    if factor < 1:
        raise VidiffInputError(f"--interpolate {factor} must be at least 1 (1: no interpolation)")
    if factor > 1:
        interpolation_stage(model)
        interpolation_settings(model, args.interpolate_steps)
        if any(job.num_frames < 2 for job in jobs):
            raise VidiffInputError("--interpolate needs at least 2 frames per clip; raise --num-frames or pass "
                                   "--interpolate 1")
    scale = args.upscale if args.upscale is not None else getattr(stages.get("upscale"), "default", 1)
    if scale < 1:
        raise VidiffInputError(f"--upscale {scale} must be at least 1 (1: no upscaling)")
    if scale > 1:
        model_scale, fold = upscaler_geometry(model)
        upscale_passes(scale, model_scale)
        for job in jobs:
            if (job.height or 0) % fold or (job.width or 0) % fold:
                raise VidiffInputError(f"{job.width}x{job.height} frames must be multiples of {fold} to upscale")
        upscale_settings(model, args.upscale_steps)
    return {"interpolate": factor, "upscale": scale}
