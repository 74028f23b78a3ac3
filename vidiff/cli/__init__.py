"""The `vidiff` command line: one module per command, each of which only parses, checks and calls the library.

Exit codes (vidiff.errors): 0 success; 2 input the user can fix (one line on stderr naming the problem, no
traceback): a `VidiffInputError`, or an I/O error on their paths or a full disk; 1 with the traceback: a failure
inside vidiff or its libraries, any other exception, which is left to end the program.
Heavy imports (torch, diffusers) happen after the arguments are parsed, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import sys

from vidiff.cli import animate, generate, inflate, info, interpolate, restyle, serve, train, upscale
from vidiff.cli import eval as eval_command
from vidiff.errors import is_user_error, one_line
from vidiff.process import keep_freed_memory, skip_exit_collection

# in the order --help lists them
COMMANDS = (inflate, generate, animate, restyle, interpolate, upscale, train, eval_command, info, serve)
# Commands that sample: they keep freed memory in the heap (vidiff.process.keep_freed_memory); all but serve then exit.
SAMPLING_COMMANDS = ("generate", "animate", "restyle", "interpolate", "upscale", "eval", "serve")


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
    except Exception as error:
        if not is_user_error(error):
            raise  # a failure inside vidiff or a library: the traceback, exit code 1
        print(f"vidiff {args.command}: error: {one_line(error)}", file=sys.stderr)
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
