"""The `vidiff` command line: one module per command, each of which only parses, checks and calls the library.

Exit codes: 0 success; 2 bad input (one line on stderr naming the problem, no traceback); 1 runtime failure.
Heavy imports (torch, diffusers) happen after the arguments are parsed, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import sys

from vidiff.cli import eval as eval_command
from vidiff.cli import animate, generate, inflate, info, interpolate, restyle, train, upscale
from vidiff.cli.common import INPUT_ERRORS
from vidiff.process import keep_freed_memory, skip_exit_collection

COMMANDS = (inflate, generate, animate, restyle, interpolate, upscale, train, eval_command, info)  # in the order --help lists them
# Commands that sample and exit: they keep freed memory in the heap (vidiff.process.keep_freed_memory).
SAMPLING_COMMANDS = ("generate", "animate", "restyle", "interpolate", "upscale", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidiff",
        description="Turn a text-to-image latent diffusion model (Stable Diffusion 1.x/2.x, diffusers layout) "
        "into a video model, and use it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
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
