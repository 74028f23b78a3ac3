"""`vidiff serve`: a Gradio page over the model's `VideoCascadePipeline`, loaded once at start-up (parse, check, load,
serve). The page itself is built in `vidiff.cli.serve_app`; gradio is imported only here, after parsing."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from vidiff.cli.common import CHECKS, LIBRARIES, add_device, model_or_default
from vidiff.errors import VidiffInputError
from vidiff.process import import_quickly

DEFAULT_OUTPUT_DIR = "vidiff-serve"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a web page that generates clips (Gradio)",
        description="Load the model once and serve a Gradio page for it: a prompt, the cascade's settings, a "
        "progress bar per stage, the clip (MP4, GIF, JSON sidecar) and a gallery of this server's results. The "
        "same page answers gradio_client: Client(URL).predict(PROMPT, api_name='/generate'). Users of the page "
        "never name a path on the server; results are written under --output-dir.",
    )
    p.add_argument("--model", help="video model folder (default: the model shipped with vidiff)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                   "0.0.0.0 serves every network the machine is on)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port, printed)")
    p.add_argument("--max-queue", type=int, default=8, help="requests that may wait for the model at once; the "
                   "next one is told the queue is full (default 8)")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="folder the clips are written to (default: "
                   f"{DEFAULT_OUTPUT_DIR}/ in the working directory)")
    p.add_argument("--max-upload-mb", type=float, default=64, help="largest upload the server accepts, in MB "
                   "(default 64)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[=SCALE]", help="a LoRA the page offers, by "
                   "its file name, at SCALE by default (1.0); repeatable. Users pick among these, never a path")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16")
    add_device(p)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    # what `vidiff.cli.clip_options.load_cascade` reads besides: the page picks the scheduler per request
    p.set_defaults(func=run, scheduler="ddim", cpu_offload=False, compile=False, progress=True)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import_quickly(CHECKS)

    # 1. Check everything that can be checked without loading a model
    model, output_dir, port = check_inputs(args)

    # 2. Load the cascade once, with every stage the model has
    generator = load_generator(args, model, output_dir)
    print(f"vidiff serve: {model} loaded in {time.perf_counter() - start:.1f} s; writing to {output_dir}",
          file=sys.stderr)

    # 3. Serve until interrupted
    from vidiff.cli.serve_app import CSS, build_app

    url = f"http://{f'[{args.host}]' if ':' in args.host else args.host}:{port}/"
    app = build_app(generator, max_queue=args.max_queue, url=url)
    app.launch(server_name=args.host, server_port=port, max_file_size=int(args.max_upload_mb * 1024 * 1024),
               allowed_paths=[str(output_dir)], prevent_thread_lock=True, quiet=True, ssr_mode=False,
               footer_links=["api"], run_history=False, mcp_server=False, enable_monitoring=False, css=CSS)
    print(f"vidiff serve: running on {url}", flush=True)
    try:
        while app.is_running:  # until Ctrl-C (Gradio's own block_thread would swallow it)
            time.sleep(0.5)
    finally:
        app.close()
    return 0


def check_inputs(args: argparse.Namespace) -> tuple[Path, Path, int]:
    """(model folder, output folder, port to bind), checked without loading any weights."""
    from vidiff.model_folder import check_video_model

    model = model_or_default(args.model)
    check_video_model(model)
    if args.max_queue < 1:
        raise VidiffInputError(f"--max-queue {args.max_queue} must be at least 1")
    if not args.max_upload_mb > 0:
        raise VidiffInputError(f"--max-upload-mb {args.max_upload_mb} must be positive")
    if not 0 <= args.port <= 65535:
        raise VidiffInputError(f"--port {args.port} must be within 0..65535 (0: any free port)")
    output_dir = Path(args.output_dir).resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise VidiffInputError(f"--output-dir {args.output_dir} is a file, not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"cannot make --output-dir {args.output_dir} ({error.strerror})") from None
    if not os.access(output_dir, os.W_OK):
        raise PermissionError(f"cannot write to --output-dir {args.output_dir}")
    from vidiff.cli.clip_options import check_loras

    args.lora_specs, _ = check_loras(args)
    return model, output_dir, bindable_port(args.host, args.port)


def bindable_port(host: str, port: int) -> int:
    """`port` (or, for 0, one the operating system picks) if `host` can listen on it now; VidiffInputError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            probe.bind((host, port))
            return probe.getsockname()[1]
    except OSError as error:
        raise VidiffInputError(f"cannot listen on {host} port {port} ({error.strerror}); pick another --port "
                               "(0: any free one) or --host") from None


def load_generator(args: argparse.Namespace, model: Path, output_dir: Path):
    """The page's `Generator` over the model's cascade, loaded as `vidiff generate` loads it, with every stage."""
    from vidiff.cli.clip_options import load_cascade, settle_device

    device, dtype = settle_device(args)
    try:
        import_quickly([*LIBRARIES, "gradio"])
    except ImportError as error:
        if error.name != "gradio":
            raise
        raise VidiffInputError("vidiff serve needs gradio; install it with: pip install 'vidiff[serve]'") from None
    from accelerate import PartialState

    from vidiff.cli.serve_app import Generator

    start = time.perf_counter()
    every_stage = {"interpolate": 2, "upscale": 2}  # load_cascade loads each stage the model has that these use
    pipe = load_cascade(args, model, every_stage, device, dtype, PartialState())
    return Generator(pipe, model, output_dir, load_s=time.perf_counter() - start,
                     loras=getattr(args, "lora_specs", ()))
