"""The `vidiff` command line. It only parses arguments and calls the library.

Exit codes: 0 success; 2 bad input (one line on stderr naming the problem, no traceback); 1 runtime failure.
Heavy imports (torch, diffusers) happen after the arguments are parsed, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vidiff.process import import_quickly, keep_freed_memory, skip_exit_collection

# Errors that mean "the input is wrong": reported in one line with exit code 2.
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)
# Imported through vidiff.process.import_quickly (collector paused). CHECKS: torch, which the input checks need;
# LIBRARIES, once the input is known to be good, before loading a model: diffusers behind the pipeline module, the
# CLIP text encoder every model folder holds, accelerate. Bad input is answered before LIBRARIES, in seconds.
CHECKS = ["vidiff.pipelines.generate", "vidiff.pipelines.cascade"]
LIBRARIES = ["vidiff.pipelines.text_to_video", "transformers.models.clip.modeling_clip", "accelerate"]
# Commands that sample and exit: they keep freed memory in the heap (vidiff.process.keep_freed_memory).
SAMPLING_COMMANDS = ("generate", "interpolate", "upscale", "eval")


def cmd_inflate(args: argparse.Namespace) -> int:
    from vidiff.models.inflate import inflate_model_folder

    options = {
        "max_frames": args.max_frames,
        "temporal_conv": False if args.no_temporal_conv else None,
        "temporal_attention": False if args.no_temporal_attention else None,
        "temporal_num_attention_heads": args.temporal_heads,
        "motion_mid_block": False if args.no_motion_mid_block else None,
    }
    options = {k: v for k, v in options.items() if v is not None}  # unset: the defaults, or the adapter's
    out = inflate_model_folder(args.base, args.out, config=args.config, overwrite=args.overwrite,
                               motion_adapter=args.motion_adapter, **options)
    print(f"wrote video model to {out}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import time

    start = time.perf_counter()
    import_quickly(CHECKS)
    from vidiff.pipelines import generate as gen
    from vidiff.pipelines.cascade import interpolation_stage, read_cascade, upscale_settings, upscaler_geometry

    # 1. Check everything that can be checked without loading a model
    if (args.prompt is None) == (args.prompts_file is None):
        raise ValueError("give exactly one of PROMPT or --prompts-file")
    if args.scheduler not in gen.SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {args.scheduler!r}; choose one of {', '.join(gen.SCHEDULER_NAMES)}")
    if args.fps <= 0:
        raise ValueError(f"--fps {args.fps} must be positive")
    model = Path(args.model) if args.model else gen.default_model()
    guidance = args.guidance if args.guidance is not None else gen.recommended_guidance(model)
    defaults = dict(negative_prompt=args.negative_prompt, num_frames=args.num_frames, height=args.height,
                    width=args.width, steps=args.steps, guidance=guidance)
    if args.prompts_file:
        jobs = gen.read_prompts_file(args.prompts_file, defaults)
    else:
        jobs = [gen.Job(prompt=args.prompt, **defaults)]
    jobs = gen.assign_seeds_and_outputs(jobs, args.output, args.seed)
    for job in jobs:
        gen.check_output(job.output)
    gen.check_model_settings(model, jobs)
    stages = read_cascade(model)
    factor = args.interpolate if args.interpolate is not None else getattr(stages.get("interpolation"), "default", 1)
    if factor < 1:
        raise ValueError(f"--interpolate {factor} must be at least 1 (1: no interpolation)")
    if factor > 1:
        interpolation_stage(model)
        if any(job.num_frames < 2 for job in jobs):
            raise ValueError("--interpolate needs at least 2 frames per clip; raise --num-frames or pass --interpolate 1")
    if args.interpolate_steps is not None and args.interpolate_steps < 1:
        raise ValueError(f"--interpolate-steps {args.interpolate_steps} must be at least 1")
    scale = args.upscale if args.upscale is not None else getattr(stages.get("upscale"), "default", 1)
    if scale < 1:
        raise ValueError(f"--upscale {scale} must be at least 1 (1: no upscaling)")
    if scale > 1:
        from vidiff.pipelines.upscale import upscale_passes

        model_scale, fold = upscaler_geometry(model)
        upscale_passes(scale, model_scale)
        for job in jobs:
            if (job.height or 0) % fold or (job.width or 0) % fold:
                raise ValueError(f"{job.width}x{job.height} frames must be multiples of {fold} to upscale")
        upscale_settings(model, args.upscale_steps)
    device = gen.pick_device(args.device)
    dtype = gen.pick_dtype(args.dtype, device)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads} must be at least 1")
        import torch

        torch.set_num_threads(args.threads)

    # 2. Load, then generate this process's share of the jobs
    import_quickly(LIBRARIES)
    from accelerate import PartialState

    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    state = PartialState()
    load_start = time.perf_counter()
    pipe = TextToVideoPipeline.from_pretrained(model, torch_dtype=dtype)
    pipe.set_scheduler(args.scheduler)
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(state.device if state.num_processes > 1 and args.device == "auto" else device)
    pipe.unet.set_attention_kernel("auto")
    if args.compile:
        pipe.compile_unet()
    pipe.set_progress_bar_config(disable=not args.progress or not state.is_local_main_process)
    post = None
    if factor > 1 or scale > 1:
        post = cascade_stages(args, model, pipe, dtype, factor, scale, args.progress and state.is_local_main_process)
    written = gen.run_jobs(pipe, jobs, fps=args.fps * factor, scheduler=args.scheduler, model=str(model),
                           process_index=state.process_index, num_processes=state.num_processes,
                           load_s=time.perf_counter() - load_start, post=post)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} clip(s) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def cascade_stages(args, model, pipe, dtype, factor: int, scale: int, progress: bool):
    """post(frames, job) for run_jobs: interpolation by `factor`, then super-resolution by `scale` (1: skipped)."""
    from vidiff.pipelines.cascade import interpolation_settings, load_interpolation, load_upscaler, upscale_settings
    from vidiff.pipelines.interpolate import interpolate
    from vidiff.pipelines.upscale import upscale, upscale_passes

    between = load_interpolation(model, pipe.device, dtype, base_pipe=pipe) if factor > 1 else None
    sampling = interpolation_settings(model, args.interpolate_steps) if factor > 1 else {}
    upscaler = load_upscaler(model, pipe.device, dtype, base_pipe=pipe) if scale > 1 else None
    upscaling = upscale_settings(model, args.upscale_steps) if scale > 1 else {}
    if upscaler is not None:
        upscale_passes(scale, upscaler.scale)
    for stage in (between, upscaler):
        if stage is not None:
            stage.set_progress_bar_config(disable=True)

    def post(frames, job):
        meta = {"base": {"frames": len(frames), "fps": args.fps, "size": [int(frames.shape[2]), int(frames.shape[1])]}}
        if between is not None:
            frames = interpolate(between, frames, factor, prompt=job.prompt, seed=job.seed, show_progress=progress,
                                 **sampling)
            meta["interpolation"] = {"factor": factor, **sampling}
        if upscaler is not None:
            frames = upscale(upscaler, frames, scale, seed=job.seed, show_progress=progress, **upscaling)
            meta["upscale"] = {"scale": scale, **upscaling}
        return frames, meta

    return post


def cmd_interpolate(args: argparse.Namespace) -> int:
    import time

    import_quickly(CHECKS)
    from vidiff.pipelines import generate as gen

    start = time.perf_counter()
    # 1. Check everything that can be checked without loading a model
    if args.factor < 2:
        raise ValueError(f"--factor {args.factor} must be at least 2 (frames out = (N - 1) * factor + 1)")
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"--fps {args.fps} must be positive")
    from vidiff.pipelines.cascade import interpolation_stage, load_interpolation

    model = Path(args.model) if args.model else gen.default_model()
    gen.check_output(args.output)
    if Path(args.output).exists():
        raise FileExistsError(f"{args.output} already exists; choose another -o")
    gen.check_model_settings(model, [])
    interpolation_stage(model)  # a cascade naming one, or a masked-frame model itself
    interpolation_sampling(model, args)
    from vidiff.io.video import read_video, write_video

    frames, fps = read_video(args.input)  # unreadable or missing input: a one-line error, exit 2
    from vidiff.pipelines.interpolate import check_interpolation_inputs, interpolate

    check_interpolation_inputs(frames, args.factor)

    # 2. Load and interpolate
    import_quickly(LIBRARIES)
    device = gen.pick_device(args.device)
    pipe = load_interpolation(model, device, gen.pick_dtype("auto", device))
    pipe.set_progress_bar_config(disable=not args.progress)
    sampling = interpolation_sampling(model, args)
    out = interpolate(pipe, frames, args.factor, prompt=args.prompt, seed=args.seed, show_progress=args.progress,
                      **sampling)
    out_fps = args.fps if args.fps is not None else fps * args.factor
    write_video(out, args.output, fps=out_fps, metadata={
        "input": str(args.input), "input_frames": len(frames), "input_fps": fps, "factor": args.factor,
        "model": str(model), **sampling, "seed": args.seed, "prompt": args.prompt,
        "seconds": round(time.perf_counter() - start, 2)})
    print(f"wrote {args.output}: {len(frames)} -> {len(out)} frames at {out_fps:g} fps")
    return 0


def interpolation_sampling(model, args) -> dict:
    from vidiff.pipelines.cascade import interpolation_settings

    return interpolation_settings(model, args.steps, args.init, args.strength)


def cmd_upscale(args: argparse.Namespace) -> int:
    import time

    import_quickly(CHECKS)
    from vidiff.pipelines import generate as gen
    from vidiff.pipelines.cascade import load_upscaler, upscale_settings, upscaler_geometry

    start = time.perf_counter()
    # 1. Check everything that can be checked without loading a model
    check_upscale_settings(args)
    model = Path(args.model) if args.model else gen.default_model()
    gen.check_output(args.output)
    if Path(args.output).exists():
        raise FileExistsError(f"{args.output} already exists; choose another -o")
    model_scale, fold = upscaler_geometry(model)  # a cascade naming an upscale stage, or an upscaler itself
    from vidiff.pipelines.upscale import upscale, upscale_passes

    upscale_passes(args.scale, model_scale)
    settings = upscale_settings(model, args.steps, args.noise_level)
    from vidiff.io.video import read_video, write_video

    frames, fps = read_video(args.input)  # unreadable or missing input: a one-line error, exit 2
    if frames.shape[1] % fold or frames.shape[2] % fold:
        raise ValueError(f"frame size {frames.shape[2]}x{frames.shape[1]} must be a multiple of {fold} for this "
                         "upscaler; resize or crop the video first")

    # 2. Load and upscale
    import_quickly(LIBRARIES)
    device = gen.pick_device(args.device)
    pipe = load_upscaler(model, device, gen.pick_dtype("auto", device))
    pipe.set_progress_bar_config(disable=not args.progress)
    out = upscale(pipe, frames, args.scale, prompt=args.prompt, seed=args.seed, shared_noise=not args.independent_noise,
                  window=args.window, overlap=args.overlap, show_progress=args.progress, **settings)
    write_video(out, args.output, fps=fps, metadata={
        "input": str(args.input), "input_size": [int(frames.shape[2]), int(frames.shape[1])], "scale": args.scale,
        "model": str(model), "steps": settings["num_inference_steps"], "noise_level": settings["noise_level"],
        "seed": args.seed,
        "prompt": args.prompt, "shared_noise": not args.independent_noise, "window": args.window,
        "seconds": round(time.perf_counter() - start, 2)})
    print(f"wrote {args.output}: {frames.shape[2]}x{frames.shape[1]} -> {out.shape[2]}x{out.shape[1]}, "
          f"{len(out)} frames")
    return 0


def check_upscale_settings(args: argparse.Namespace) -> None:
    if args.scale < 2:
        raise ValueError(f"--scale {args.scale} must be at least 2")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps} must be at least 1")
    if args.noise_level is not None and not 0 <= args.noise_level <= 350:
        raise ValueError(f"--noise-level {args.noise_level} must be within 0..350")
    if args.window is not None and args.window < 2:
        raise ValueError(f"--window {args.window} must be at least 2 frames")
    if args.overlap < 0 or (args.window is not None and args.overlap >= args.window):
        raise ValueError(f"--overlap {args.overlap} must be at least 0 and below --window")


def cmd_train(args: argparse.Namespace) -> int:
    from vidiff.config import TrainConfig, load_config

    config = load_config(TrainConfig, args.config, args.overrides)
    config.check()
    import_quickly(LIBRARIES)
    from vidiff.training.trainer import TrainingDiverged, train

    try:
        summary = train(config, resume=args.resume or False)
    except TrainingDiverged as error:  # a runtime failure, but one with a clear cause: no traceback
        print(f"vidiff train: {error}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("steps", "final_loss", "frames_per_second")}
                     | {"skipped_files": len(summary["skipped_files"])}, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import_quickly(CHECKS)
    from vidiff.eval import run

    from vidiff.pipelines.generate import DEFAULT_GUIDANCE, default_model, recommended_guidance

    # 1. Check everything that can be checked without loading a model
    model = Path(args.model) if args.model else None
    if not args.ground_truth and model is None:
        model = default_model()
    if args.guidance is None:
        args.guidance = recommended_guidance(model) if model is not None else DEFAULT_GUIDANCE
    run.check_settings(args.clips_per_combo, args.split, args.frames, args.steps, args.batch_size, args.guidance)
    run.check_device(args.device)
    run.check_out_dir(args.out)
    if model is not None:
        run.check_video_model(model, args.frames, args.steps)
    if args.baseline:
        run.check_image_model(args.baseline)

    # 2. Generate (or render) and judge
    if not args.ground_truth or args.baseline:  # ground truth alone is rendered, no model is loaded
        import_quickly(LIBRARIES)
    options = dict(clips_per_combo=args.clips_per_combo, split=args.split, num_frames=args.frames, seed=args.seed,
                   progress=args.progress)
    sampling = dict(steps=args.steps, guidance=args.guidance, batch_size=args.batch_size, device=args.device)
    if args.ground_truth:
        result = run.evaluate_ground_truth(**options, size=run.frame_size(model) if model else 64)
    else:
        result = run.evaluate_model(model, **options, **sampling)
    baseline = run.evaluate_image_baseline(args.baseline, **options, **sampling) if args.baseline else None

    # 3. Report
    paths = run.write_report(result, args.out, baseline)
    print(run.report_markdown(result, baseline), end="")
    print(f"wrote {paths[0]} and {paths[1]}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from vidiff.models.temporal import TemporalAttention, TemporalConv
    from vidiff.models.video_unet import VideoUNet

    folder = Path(args.model)
    unet_folder = folder / "unet" if (folder / "unet").is_dir() else folder
    if not (unet_folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a vidiff model folder (no unet/config.json)")
    if json.loads((unet_folder / "config.json").read_text()).get("_class_name") != "VideoUNet":
        raise ValueError(f"{unet_folder} holds no VideoUNet; make one with `vidiff inflate`")
    unet = VideoUNet.from_pretrained(unet_folder)

    def count(types) -> int:
        return sum(p.numel() for m in unet.modules() if isinstance(m, types) for p in m.parameters())

    info = {
        "model": str(folder),
        "max_frames": unet.config.max_frames,
        "in_channels": unet.unet.config.in_channels,
        "spatial_parameters": sum(p.numel() for p in unet.unet.parameters()),
        "temporal_conv_parameters": count(TemporalConv),
        "temporal_attention_parameters": count(TemporalAttention),
        "components": sorted(p.name for p in folder.iterdir() if p.is_dir()) if unet_folder != folder else [],
    }
    from vidiff.pipelines.cascade import STAGE_SETTING, read_cascade

    stages = read_cascade(folder) if unet_folder != folder else {}
    if stages:  # a cascade: what each later stage does by default
        info["cascade"] = {name: {"path": str(stage.path), STAGE_SETTING[name]: stage.default, **stage.sampling}
                           for name, stage in stages.items()}
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidiff",
        description="Turn a text-to-image latent diffusion model (Stable Diffusion 1.x/2.x, diffusers layout) "
        "into a video model, and use it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "inflate",
        help="add temporal layers to a Stable Diffusion model, writing a video model folder",
        description="Copy a Stable Diffusion model's U-Net into a video U-Net with temporal convolutions and "
        "temporal attention after its spatial layers (identity at start, so it first reproduces the image model "
        "frame by frame), and write a complete video model folder (unet/ vae/ text_encoder/ tokenizer/ "
        "scheduler/).",
    )
    p.add_argument("--base", required=True, help="Stable Diffusion diffusers folder, or a single-file .safetensors")
    p.add_argument("--out", required=True, help="video model folder to write (must not exist unless --overwrite)")
    p.add_argument("--config", help="for a single-file base: local diffusers folder with the matching configs")
    p.add_argument("--motion-adapter", help="AnimateDiff motion modules to load into the temporal attention: a "
                   "diffusers MotionAdapter folder, or an original .safetensors/.ckpt (loaded weights-only)")
    p.add_argument("--max-frames", type=int, help="longest clip the model accepts (default 32, or the adapter's)")
    p.add_argument("--temporal-heads", type=int, help="heads of each temporal attention (default 8, or the adapter's)")
    p.add_argument("--no-temporal-conv", action="store_true", help="leave out the temporal convolutions")
    p.add_argument("--no-temporal-attention", action="store_true", help="leave out the temporal attention")
    p.add_argument("--no-motion-mid-block", action="store_true", help="no temporal attention in the mid block")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (only once complete)")
    p.set_defaults(func=cmd_inflate)

    p = sub.add_parser(
        "generate",
        help="generate video clips from text prompts",
        description="Generate a clip from a prompt and write it as MP4, GIF, WebM or a folder of PNG frames "
        "(picked by the output's extension), with a JSON sidecar that records everything needed to reproduce it. "
        "Under `accelerate launch`, a prompts file is split across the processes.",
    )
    p.add_argument("prompt", nargs="?", help="the text prompt (or use --prompts-file)")
    p.add_argument("-o", "--output", help="output path; .mp4 .gif .webm .mkv (lossless), or a folder for PNG frames. "
                   "May use {index} {slug} {seed}. Default: outputs/{slug}-{seed}.mp4")
    p.add_argument("--model", help="video model folder (default: the model shipped with vidiff)")
    p.add_argument("--prompts-file", help="one prompt per line, or JSONL with 'prompt' and per-prompt "
                   "seed, negative_prompt, num_frames, height, width, steps, guidance, output")
    p.add_argument("--negative-prompt", help="what to steer away from (classifier-free guidance)")
    p.add_argument("--num-frames", type=int, default=16, help="frames per clip (default 16)")
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
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), or e.g. cuda:1, cpu")
    p.add_argument("--cpu-offload", action="store_true", help="keep models on the CPU until used (small GPUs)")
    p.add_argument("--compile", action="store_true", help="run the base U-Net through torch.compile (inductor). "
                   "The first clip pays for compiling (about a minute at SD 1.5 size on an H200, minutes on a CPU), "
                   "so it pays off over many clips; measured speed-ups are in BENCHMARKS.md")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores). On a CPU that is busy "
                   "with other work, --threads 1 avoids OpenMP slowdowns")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "interpolate",
        help="fill in frames between the frames of a video (masked-frame interpolation model)",
        description="Turn N frames into (N - 1) * FACTOR + 1: a masked-frame diffusion model (Make-A-Video's "
        "frame interpolation, trained with `vidiff train ... task=interpolate`) generates the frames between each "
        "pair of input frames. The input frames come back unchanged. Inputs longer than the model's window run "
        "in windows that share their boundary frames. Writes a JSON sidecar beside the output.",
    )
    p.add_argument("input", help="any readable video (.mp4 .mov .avi .mkv .webm .gif) or a folder of frames")
    p.add_argument("--factor", type=int, required=True, help="frames out per frame in: N -> (N - 1) * FACTOR + 1")
    p.add_argument("-o", "--output", required=True,
                   help="output path: .mp4 .gif .webm .mkv (lossless), or a folder for PNGs")
    p.add_argument("--model", help="a cascade folder naming an interpolation stage, or a model trained with `vidiff "
                   "train ... task=interpolate` (default: the stage shipped with vidiff, trained on the shapes world)")
    p.add_argument("--fps", type=float, help="output frame rate (default: the input's times --factor)")
    p.add_argument("--steps", type=int, help="denoising steps per window (default: the stage's recommendation in "
                   "cascade.json, else 10)")
    p.add_argument("--init", choices=("noise", "blend", "nearest"), help="start from pure noise, or from the "
                   "keyframes' blend (or the nearer keyframe) noised part-way (default: the stage's recommendation)")
    p.add_argument("--strength", type=float, help="with --init blend/nearest: how much of the schedule runs, in "
                   "(0, 1]; lower keeps more of the start (default: the stage's recommendation)")
    p.add_argument("--prompt", default="", help="optional text describing the video (default: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled frames (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), or e.g. cuda:1, cpu")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser(
        "upscale",
        help="raise a video's resolution with the super-resolution stage (temporally consistent upscaler)",
        description="Upscale every frame of a video with a diffusion upscaler (Stable Diffusion x4-upscaler layout "
        "with temporal layers). Every frame starts from the same noise so invented detail agrees across frames; "
        "long videos run in overlapping windows of frames (--window, --overlap), which with the chunked VAE "
        "decode bound the memory.",
    )
    p.add_argument("input", help="any readable video (.mp4 .mov .avi .mkv .webm .gif) or a folder of frames")
    p.add_argument("--scale", type=int, required=True, help="size factor: the model's own scale (4 for an x4 "
                   "upscaler) or a power of it, run in passes")
    p.add_argument("-o", "--output", required=True,
                   help="output path: .mp4 .gif .webm .mkv (lossless), or a folder for PNGs")
    p.add_argument("--model", help="a cascade folder naming an upscale stage, or an upscaler model folder: `vidiff "
                   "inflate` of a Stable Diffusion x4-upscaler folder, or a model trained with task: upscale "
                   "(default: the 2x stage shipped with vidiff, trained on the shapes world)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the stage's cascade.json recommendation, "
                   "else 25)")
    p.add_argument("--noise-level", type=int, help="noise added to the low-res frames, 0..350 (default: the "
                   "stage's recommendation, else 20 as Stable Diffusion's upscaler); more hides compression artefacts")
    p.add_argument("--prompt", default="", help="optional text describing the video (default: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default 0)")
    p.add_argument("--window", type=int, help="frames per U-Net call (default: the model's max_frames); lower "
                   "to use less memory")
    p.add_argument("--overlap", type=int, default=4, help="frames shared by neighbouring windows (default 4)")
    p.add_argument("--independent-noise", action="store_true", help="start every frame from its own noise "
                   "(flickers more; for comparison)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), or e.g. cuda:1, cpu")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser(
        "train",
        help="fine-tune a video model on a folder of videos",
        description="Train the temporal layers (by default) of a video model on a folder of videos, captioned "
        "or not. Settings come from a YAML config; `key=value` arguments override it, with the config's key names "
        "(e.g. model=DIR data=DIR output=DIR max_steps=500 num_frames=16 resolution=256 batch_size=1 "
        "checkpoint_every=100 seed=0). Runs the same under `accelerate launch` on many GPUs or machines.",
    )
    p.add_argument("--config", help="YAML run config, e.g. configs/train/temporal.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config settings")
    p.add_argument("--resume", nargs="?", const="latest", help="resume from the newest checkpoint in the output "
                   "folder, or from the checkpoint folder given")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="judge a video model on the shapes world (colour, shape, direction accuracy)",
        description="Generate clips from the caption of every colour-shape-direction combination of the shapes "
        "world, read colour, shape and direction back from their pixels, and report accuracies for combinations "
        "seen in training and held out of it. Prints a markdown table and writes eval.json and eval.md.",
    )
    p.add_argument("--model", help="video model folder (default: the model shipped with vidiff)")
    p.add_argument("--baseline", metavar="IMAGE_MODEL_DIR", help="also judge this Stable Diffusion image model, "
                   "every frame sampled on its own: what the video model scores without temporal layers")
    p.add_argument("--ground-truth", action="store_true", help="judge rendered clips instead of a model (a check "
                   "of the judge; frame size from --model if given, else 64)")
    p.add_argument("--clips-per-combo", type=int, default=8, help="clips per combination (default 8)")
    p.add_argument("--split", default="all", help="all (84 combinations, default), train (76) or heldout (8)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's "
                   "sampling.json recommendation, else 7.5; the shipped tiny model recommends 1.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole evaluation (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per sampling call (default 8)")
    p.add_argument("--out", default="eval-report", help="report folder for eval.json and eval.md "
                   "(default eval-report/)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), or e.g. cuda:1, cpu")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "info",
        help="describe a video model folder",
        description="Print a video model's settings and parameter counts as JSON.",
    )
    p.add_argument("model", help="video model folder (or its unet/ folder)")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None, program: bool = False) -> int:
    """Run one command. `program`: this process is the `vidiff` program and ends after it (see run())."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if program and args.command in SAMPLING_COMMANDS:
        keep_freed_memory()
    try:
        return args.func(args)
    except INPUT_ERRORS as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"vidiff {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vidiff {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> int:
    """The `vidiff` program (the console script, and `python -m vidiff.cli`): main() with the settings that suit a
    process which ends after one command (vidiff.process), then an exit without the interpreter's last collection.
    """
    code = main(program=True)
    skip_exit_collection()
    return code


if __name__ == "__main__":
    sys.exit(run())
