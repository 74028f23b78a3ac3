"""Benchmark vidiff's text-to-video sampling against diffusers, side by side in one process.

Implementations, on identical shapes (frames, size, steps, guidance, DDIM):
- vidiff-motion: VideoUNet with temporal attention only, the same work as AnimateDiff;
- vidiff: the default VideoUNet (temporal conv + temporal attention);
- diffusers-animatediff: AnimateDiffPipeline with a MotionAdapter of matching blocks, widths and heads;
- diffusers-unet3d: UNet3DConditionModel (ModelScope layout) of matching widths, denoising step only;
- with --ab, variants of vidiff that each change one speed setting, to measure it on this machine: vidiff-conv1d
  (the temporal conv as a Conv1d over copied `(b h w) c f` rows, as before), vidiff-channels-last and
  vidiff-contiguous (the U-Net's convolution layout forced) and, on CUDA, vidiff-cudnn-sdpa (cuDNN's attention
  kernel first in SDPA's order);
- with --compile, vidiff-compiled and diffusers-animatediff-compiled: each U-Net through `torch.compile`
  (inductor), so that compiled vidiff is also compared with a compiled peer.

Reported: median time per denoising step (the U-Net on the guidance batch), median end-to-end time (decode
included), peak memory (CUDA max allocated, or CPU RSS growth), each with the ratio to AnimateDiff, and the U-Net
step's FLOPs counted by torch's FlopCounterMode.

    python scripts/bench.py --size tiny                         # CPU, seconds
    python scripts/bench.py --size sd15 --frames 2 --height 128 --width 128 --steps 2   # SD 1.5 widths on CPU
    python scripts/bench.py --size sd15 --device cuda --dtype bf16 --frames 16 --height 512 --width 512 --steps 25

With --long-memory, peak memory of long clips instead (issue 25): the shipped default's base model with FreeNoise
windows (16 frames, stride 4) and split inference (`enable_free_noise_split_inference`: spatial layers over 16
frames at a time), one end-to-end run of 16 and of 256 frames at the same size, each in its own process (peak CPU
RSS growth, or CUDA max allocated), and 256 frames without split inference beside them:

    python scripts/bench.py --long-memory --height 256 --width 256 --steps 2 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import json
import platform
import statistics
import sys
import threading
import time
import types
from pathlib import Path

import torch
from diffusers import AnimateDiffPipeline, MotionAdapter, UNet2DConditionModel, UNet3DConditionModel
from einops import rearrange
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import vidiff
from vidiff import inflate_unet
from vidiff.testing.configs import SD15_UNET
from vidiff.models.temporal import TemporalConv
from vidiff.pipelines.text_to_video import TextToVideoPipeline
from vidiff.testing.tiny import make_scheduler, make_text_encoder, make_tokenizer, make_unet2d, make_vae


def build_components(size: str, seed: int = 0):
    tokenizer = make_tokenizer()
    if size == "tiny":
        return dict(unet2d=make_unet2d(width=32, cross_attention_dim=32, seed=seed), vae=make_vae(seed=seed),
                    text_encoder=make_text_encoder(tokenizer, width=32, seed=seed), tokenizer=tokenizer)
    torch.manual_seed(seed)  # SD 1.5 widths, random weights: speed does not need trained weights
    return dict(unet2d=UNet2DConditionModel(**SD15_UNET).eval(), vae=_sd_vae(),
                text_encoder=make_text_encoder(tokenizer, width=768, layers=12, seed=seed), tokenizer=tokenizer)


def _sd_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                         block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4).eval()


def build_pipelines(parts, heads: int, max_frames: int, ab: bool = False, device: str = "cpu"):
    unet2d = parts["unet2d"]
    config = unet2d.config
    adapter = MotionAdapter(block_out_channels=tuple(config.block_out_channels),
                            motion_layers_per_block=config.layers_per_block, motion_num_attention_heads=heads,
                            motion_norm_num_groups=config.norm_num_groups, motion_max_seq_length=max_frames).eval()
    common = dict(vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"])
    video_motion = inflate_unet(unet2d, temporal_conv=False, temporal_num_attention_heads=heads, max_frames=max_frames)
    video_full = inflate_unet(unet2d, temporal_num_attention_heads=heads, max_frames=max_frames)
    pipes = {
        "vidiff-motion": TextToVideoPipeline(unet=video_motion, scheduler=make_scheduler(), **common),
        "vidiff": TextToVideoPipeline(unet=video_full, scheduler=make_scheduler(), **common),
        "diffusers-animatediff": AnimateDiffPipeline(unet=unet2d, motion_adapter=adapter,
                                                     scheduler=make_scheduler(), **common),
    }
    if ab:
        def variant(conv_forward=None, **settings):
            unet = inflate_unet(unet2d, temporal_num_attention_heads=heads, max_frames=max_frames)
            for module in unet.modules():
                if conv_forward is not None and isinstance(module, TemporalConv):
                    module.forward = types.MethodType(conv_forward, module)
            pipe = TextToVideoPipeline(unet=unet, scheduler=make_scheduler(), **common)
            for key, value in settings.items():
                setattr(pipe, key, value)
            return pipe

        pipes["vidiff-conv1d"] = variant(_conv1d_forward)
        pipes["vidiff-channels-last"] = variant(conv_layout="channels_last")
        pipes["vidiff-contiguous"] = variant(conv_layout="contiguous")
        if torch.device(device).type == "cuda":
            pipes["vidiff-cudnn-sdpa"] = copy.copy(pipes["vidiff"])  # the same U-Net, cuDNN's SDPA kernel first
    unet3d = UNet3DConditionModel(
        block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
        cross_attention_dim=config.cross_attention_dim, attention_head_dim=heads, norm_num_groups=config.norm_num_groups,
        down_block_types=tuple(t.replace("2D", "3D") for t in config.down_block_types),
        up_block_types=tuple(t.replace("2D", "3D") for t in config.up_block_types),
    ).eval()
    return pipes, unet3d


def _conv1d_forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """vidiff's previous TemporalConv.forward: frames to the last axis by copying, then a Conv1d."""
    height = x.shape[2]
    h = rearrange(x, "(b f) c h w -> (b h w) c f", f=num_frames)
    h = self.conv(h)
    return rearrange(h, "(b h w) c f -> (b f) c h w", h=height, w=x.shape[3])


AB_VARIANTS = ("vidiff-conv1d", "vidiff-channels-last", "vidiff-contiguous", "vidiff-cudnn-sdpa")
CUDNN_FIRST = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def model_bytes(pipe) -> int:
    """Bytes of the weights an implementation needs: its U-Net (with temporal layers), VAE and text encoder."""
    modules = [pipe.unet, pipe.vae, pipe.text_encoder]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


class PeakMemory:
    """Peak memory over a block: CUDA max allocated, or CPU resident-set growth sampled every millisecond."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base, self.stop = _rss(), threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, _rss() - self.base)
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def unet_inputs(pipe, args, device, dtype):
    batch = 2  # classifier-free guidance: unconditional and conditional halves in one batch
    latents = torch.randn(batch, 4, args.frames, args.height // 8, args.width // 8, device=device, dtype=dtype)
    text = torch.randn(batch, 77, pipe.text_encoder.config.hidden_size, device=device, dtype=dtype)
    return latents, torch.tensor(500, device=device), text  # a 0-d timestep, as the sampling loops pass it


def step_fn(name, pipe, unet3d, args, device, dtype):
    """A callable running one denoising step of implementation `name` on the guidance batch, as the pipeline
    calls its U-Net: without autograd, and for vidiff in the pipeline's per-device settings."""
    latents, t, text = unet_inputs(pipe, args, device, dtype)
    if isinstance(pipe, TextToVideoPipeline):
        pipe.use_conv_layout(device)
    context = functools.partial(sdpa_kernel, CUDNN_FIRST, set_priority=True) if name.endswith("cudnn-sdpa") \
        else contextlib.nullcontext
    model = unet3d if name == "diffusers-unet3d" else pipe.unet
    if name.startswith("diffusers-animatediff"):
        text = text.repeat_interleave(args.frames, dim=0)  # diffusers >= 0.31 takes text per frame

    def run():
        with torch.no_grad(), context():
            return model(latents, t, text).sample
    return run


def end_to_end_fn(name, pipe, args):
    kwargs = dict(num_frames=args.frames, height=args.height, width=args.width, num_inference_steps=args.steps,
                  guidance_scale=7.5, output_type="np", generator=torch.Generator().manual_seed(0))
    return lambda: pipe("a red circle moving right", **kwargs).frames


def memory_probe(args, device, dtype) -> None:
    """Child process: build, then sample RSS through one first end-to-end run (no allocator cache yet to reuse)."""
    parts = build_components(args.size)
    pipes, _ = build_pipelines(parts, args.heads, max(32, args.frames), args.ab, args.device)
    pipe = pipes[args.memory_probe.replace("-compiled", "")]
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    with PeakMemory(device) as peak:
        end_to_end_fn(args.memory_probe, pipe, args)()
    print(json.dumps({"peak_growth": peak.peak}))


def long_memory_probe(args, device, dtype) -> None:
    """Child process: the default model's base with FreeNoise windows (and, unless "no-split" is asked, split
    inference), one end-to-end run of --frames frames; prints the peak growth."""
    from vidiff.model_folder import default_model

    pipe = TextToVideoPipeline.from_pretrained(default_model()).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_free_noise(context_length=16, context_stride=4)
    if args.memory_probe != "no-split":
        pipe.enable_free_noise_split_inference(temporal_split_size=16)
    with PeakMemory(device) as peak:
        pipe("a red circle moving right", num_frames=args.frames, height=args.height, width=args.width,
             num_inference_steps=args.steps, guidance_scale=1.5, output_type="np",
             generator=torch.Generator().manual_seed(0))
    print(json.dumps({"peak_growth": peak.peak}))


def long_memory(args, argv: list[str]) -> dict:
    """Peak memory growth at 16 and 256 frames with split inference, and at 256 without, in child processes."""
    base = [a for a in argv if a not in ("--long-memory",)]
    results = {}
    for frames, mode in ((16, "split"), (256, "split"), (256, "no-split")):
        import subprocess

        child = subprocess.run([sys.executable, __file__, *base, "--frames", str(frames), "--memory-probe", mode,
                                "--long-memory-probe"], capture_output=True, text=True, check=True)
        results[f"{frames}-{mode}"] = json.loads(child.stdout.strip().splitlines()[-1])["peak_growth"]
        print(f"{frames} frames, {mode}: peak growth {results[f'{frames}-{mode}'] / 2**20:.0f} MiB", flush=True)
    results["ratio_256_to_16_split"] = results["256-split"] / results["16-split"]
    results["machine"] = _machine(torch.device(args.device))
    results["settings"] = {"height": args.height, "width": args.width, "steps": args.steps, "device": args.device,
                           "dtype": args.dtype, "threads": args.threads}
    print(json.dumps(results, indent=2))
    if args.json:
        from vidiff.atomic import write_text

        write_text(args.json, json.dumps(results, indent=2) + "\n")
    return results


def _probe_in_subprocess(name: str, argv: list[str]) -> int:
    import subprocess

    result = subprocess.run([sys.executable, __file__, *argv, "--memory-probe", name, "--repeats", "0"],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_growth"]


def compiled_pipeline(pipe, args, device, dtype):
    """The vidiff pipeline with its U-Net compiled (`compile_unet`); refuses to time it unless it matches eager."""
    compiled = copy.copy(pipe)
    compiled.unet = copy.deepcopy(pipe.unet)
    compiled.compile_unet()
    latents, t, text = unet_inputs(pipe, args, device, dtype)
    _warm_up_and_check("vidiff", compiled.unet, compiled.unet._orig_mod, (latents, t, text), dtype)
    return compiled


def compiled_animatediff(pipe, args, device, dtype):
    """The peer compiled the same way: AnimateDiffPipeline with its UNetMotionModel through `torch.compile`."""
    compiled = copy.copy(pipe)
    compiled.unet = torch.compile(copy.deepcopy(pipe.unet))
    latents, t, text = unet_inputs(pipe, args, device, dtype)
    inputs = (latents, t, text.repeat_interleave(args.frames, dim=0))  # one text per frame, as the pipeline passes
    _warm_up_and_check("AnimateDiff", compiled.unet, pipe.unet, inputs, dtype)
    return compiled


def _warm_up_and_check(label, compiled_unet, eager_unet, inputs, dtype) -> None:
    """Compile (the first call) and stop unless the compiled output equals eager's within dtype tolerance."""
    with torch.no_grad():
        start = time.perf_counter()
        out = compiled_unet(*inputs).sample
        print(f"torch.compile warm-up ({label}): {time.perf_counter() - start:.0f} s", file=sys.stderr)
        reference = eager_unet(*inputs).sample
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    error = ((out - reference).abs().max() / reference.abs().max()).item()
    if error > tolerance:
        raise SystemExit(f"compiled {label} differs from eager by {error:.2e} (relative), above {tolerance}")


def timed(fn, device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--e2e-repeats", type=int, help="end-to-end repeats (default: half of --repeats)")
    parser.add_argument("--skip", nargs="*", default=[], help="implementations to leave out")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="also time vidiff with torch.compile (inductor); "
                        "its output is checked against eager first")
    parser.add_argument("--ab", action="store_true", help="also time vidiff variants that each undo one speed change")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: one implementation, report peak RSS
    parser.add_argument("--long-memory", action="store_true", help="peak memory of 16 and 256 frames with FreeNoise "
                        "windows and split inference, on the default model (see above)")
    parser.add_argument("--long-memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), {"fp32": torch.float32, "fp16": torch.float16,
                                                "bf16": torch.bfloat16}[args.dtype]

    if args.long_memory_probe:
        return long_memory_probe(args, device, dtype)
    if args.long_memory:
        return long_memory(args, list(argv if argv is not None else sys.argv[1:]))
    if args.memory_probe:
        return memory_probe(args, device, dtype)
    with torch.device(device):  # weights made where they run: random init of SD 1.5 widths is slow on a CPU
        parts = build_components(args.size)
        pipes, unet3d = build_pipelines(parts, args.heads, max(32, args.frames), args.ab, args.device)
    for pipe in pipes.values():
        pipe.to(device, dtype)
        pipe.set_progress_bar_config(disable=True)
    if args.compile:
        pipes["vidiff-compiled"] = compiled_pipeline(pipes["vidiff"], args, device, dtype)
        pipes["diffusers-animatediff-compiled"] = compiled_animatediff(pipes["diffusers-animatediff"], args, device,
                                                                       dtype)
    unet3d.to(device, dtype)
    names = [n for n in [*pipes, "diffusers-unet3d"] if n not in args.skip]

    # Steps: interleave the implementations, repeat by repeat, so machine noise hits them alike
    step_fns = {n: step_fn(n, pipes.get(n, pipes["vidiff"]), unet3d, args, device, dtype) for n in names}
    step_times = {n: timed(step_fns[n], device, 0, args.warmup) for n in names}
    for _ in range(args.repeats):
        for n in names:
            step_times[n] += timed(step_fns[n], device, 1, 0)
    # FLOPs of a compiled U-Net are counted on its eager original: running the compiled one under FlopCounterMode
    # left it slower than eager for the rest of the process (0.138 -> 0.23 s a step, CPU, torch 2.13), which had
    # slowed every compiled end-to-end run timed after the count (BENCHMARKS.md, run 8)
    eager = {n: n.removesuffix("-compiled") for n in names}
    # diffusers-unet3d has no pipeline of its own; vidiff's supplies the text width of its inputs
    flops = {n: count_flops(step_fn(eager[n], pipes.get(eager[n], pipes["vidiff"]), unet3d, args, device, dtype))
             for n in names}
    step_memory = {}
    for n in names:
        with PeakMemory(device) as peak:
            step_fns[n]()
        step_memory[n] = peak.peak

    print("step medians (s):", {n: round(statistics.median(step_times[n]), 4) for n in names}, flush=True)
    e2e_names = [n for n in names if n in pipes and n not in AB_VARIANTS]  # the variants differ in the U-Net only
    e2e_fns = {n: end_to_end_fn(n, pipes[n], args) for n in e2e_names}
    e2e_times = {n: timed(e2e_fns[n], device, 0, args.warmup) for n in e2e_names}
    for _ in range(args.e2e_repeats or max(1, args.repeats // 2)):
        for n in e2e_names:
            e2e_times[n] += timed(e2e_fns[n], device, 1, 0)
    e2e_memory = {}
    for n in e2e_names:
        if device.type == "cpu":  # a fresh process each: peak RSS above the loaded models, not allocator reuse
            e2e_memory[n] = _probe_in_subprocess(n, argv or sys.argv[1:])
            continue
        with PeakMemory(device) as peak:
            e2e_fns[n]()
        e2e_memory[n] = peak.peak
    weights = {n: model_bytes(pipes[n]) for n in e2e_names}

    if args.compile:  # a compiled U-Net that recompiled past dynamo's limit would silently run eager
        print("dynamo stats:", dict(torch._dynamo.utils.counters["stats"]), file=sys.stderr)
    reference = "diffusers-animatediff"
    results = {"settings": vars(args), "machine": _machine(device), "rows": []}
    for n in names:
        row = {"implementation": n, "step_s": statistics.median(step_times[n]), "step_gflops": flops[n] / 1e9,
               "step_peak_mb": step_memory[n] / 2**20}
        if n in e2e_times:
            row |= {"end_to_end_s": statistics.median(e2e_times[n]), "end_to_end_peak_mb": e2e_memory[n] / 2**20,
                    "weights_mb": weights[n] / 2**20, "total_peak_mb": (weights[n] + e2e_memory[n]) / 2**20}
        results["rows"].append(row)
    ref = next((r for r in results["rows"] if r["implementation"] == reference), None)
    for row in results["rows"]:
        if ref:
            for key in ("step_s", "end_to_end_s", "step_peak_mb", "end_to_end_peak_mb", "total_peak_mb"):
                if key in row and ref.get(key):
                    row[key.replace("_s", "").replace("_mb", "") + "_ratio"] = row[key] / ref[key]
        row["step_tflops_per_s"] = row["step_gflops"] / 1e3 / row["step_s"]
    print(to_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def _machine(device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "vidiff": vidiff.__version__,
            "cpu_threads": torch.get_num_threads(), "platform": platform.platform()}
    import diffusers

    info["diffusers"] = diffusers.__version__
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def to_markdown(results: dict) -> str:
    s = results["settings"]
    lines = [f"size={s['size']} device={s['device']} dtype={s['dtype']} frames={s['frames']} "
             f"{s['height']}x{s['width']} steps={s['steps']} guidance=7.5 ddim; medians of {s['repeats']} "
             f"({json.dumps(results['machine'])})", "",
             "| implementation | step (s) | step / AnimateDiff | end-to-end (s) | e2e / AnimateDiff | "
             "step peak MB | e2e peak MB | e2e memory / AnimateDiff | weights + e2e peak MB | total / AnimateDiff "
             "| step GFLOP | TFLOP/s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(
            f"| {r['implementation']} | {r['step_s']:.4f} | {r.get('step_ratio', float('nan')):.2f} | "
            f"{r.get('end_to_end_s', float('nan')):.3f} | {r.get('end_to_end_ratio', float('nan')):.2f} | "
            f"{r['step_peak_mb']:.0f} | {r.get('end_to_end_peak_mb', float('nan')):.0f} | "
            f"{r.get('end_to_end_peak_ratio', float('nan')):.2f} | {r.get('total_peak_mb', float('nan')):.0f} | "
            f"{r.get('total_peak_ratio', float('nan')):.2f} | {r['step_gflops']:.2f} | "
            f"{r['step_tflops_per_s']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
