"""What the `vidiff` commands share: the error policy, the import stages, and the options every command takes."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidiff.errors import USER_OS_ERRORS, VidiffInputError

# Errors that mean "the input is wrong", reported in one line with exit code 2: vidiff.errors.is_user_error says
# which (it also counts a full disk); this tuple is kept for callers that catch them.
INPUT_ERRORS = (VidiffInputError, *USER_OS_ERRORS)
# Imported through vidiff.process.import_quickly (collector paused). CHECKS: torch, which the input checks need;
# LIBRARIES, once the input is known to be good, before loading a model: diffusers behind the pipeline module, the
# CLIP text encoder every model folder holds, accelerate. Bad input is answered before LIBRARIES, in seconds.
CHECKS = ["vidiff.cli.jobs", "vidiff.pipelines.cascade"]
LIBRARIES = ["vidiff.pipelines.text_to_video", "transformers.models.clip.modeling_clip", "accelerate"]


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), or e.g. cuda:1, cpu")


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True,
                        help="output path: .mp4 .gif .webm .mkv (lossless), or a folder for PNGs")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (once the new one is "
                        "complete); a folder holding anything but a frame folder's files is never replaced")


def model_or_default(model: str | None) -> Path:
    """The --model folder, or the default model shipped in the package."""
    from vidiff.model_folder import default_model

    return Path(model) if model else default_model()


def check_new_output(path: str, overwrite: bool = False) -> None:
    """A writable output path of a known format that does not exist yet (or, with `overwrite`, may be replaced)."""
    from vidiff.cli.jobs import check_output
    from vidiff.io.video import check_video_destination

    check_output(path)
    check_video_destination(path, overwrite)


def check_room_for(path: str, num_frames: int, height: int, width: int) -> None:
    """Before sampling: refuse when the output's file system has less room than such a clip will take."""
    from vidiff.errors import check_free_space
    from vidiff.io.video import estimated_bytes, video_suffix

    suffix = video_suffix(path)
    check_free_space(Path(path).parent if suffix else Path(path), estimated_bytes(num_frames, height, width, suffix))
