"""Weights files: the user's to fix when they will not load, and written so that equal weights give equal bytes.

`loading(folder)` wraps a load from a model folder: if it fails and a weights file there is truncated, corrupt, or
a pickle that holds more than tensors, the failure becomes one `VidiffInputError` naming that file and what is wrong
with it. Pickles are only ever opened with `weights_only=True`. `read_weights` does the same for one file.
`save_safetensors` writes a safetensors file whose header is sorted, so identical weights and metadata give
identical bytes (safetensors itself orders metadata at random).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from vidiff.atomic import atomic_path
from vidiff.errors import VidiffInputError, is_user_error

T = TypeVar("T")
SAFETENSORS = (".safetensors",)
PICKLES = (".bin", ".pt", ".pth", ".ckpt")
FIX = "replace it (download, convert or train it again)"


@contextlib.contextmanager
def loading(*folders: str | os.PathLike) -> Iterator[None]:
    """Run a load from `folders`; if it fails, look for a weights file there that cannot be read, and raise a
    `VidiffInputError` naming it instead. A failure with every file readable is not the user's: it propagates."""
    try:
        yield
    except Exception as error:
        if is_user_error(error):
            raise
        for folder in folders:
            broken = find_broken_weights(folder)
            if broken is not None:
                path, reason = broken
                raise VidiffInputError(f"{path}: {reason}; {FIX}") from error
        raise


def check_weights(folder: str | os.PathLike) -> None:
    """Refuse a folder holding a weights file that cannot be read (`VidiffInputError` naming it)."""
    broken = find_broken_weights(folder)
    if broken is not None:
        path, reason = broken
        raise VidiffInputError(f"{path}: {reason}; {FIX}")


def read_weights(path: str | os.PathLike, loader: Callable[[Path], T]) -> T:
    """`loader(path)`, with a file that cannot be read turned into a `VidiffInputError` naming it."""
    path = Path(path)
    try:
        return loader(path)
    except Exception as error:
        if is_user_error(error):
            raise
        reason = weights_problem(path) or f"cannot be loaded ({type(error).__name__}: {_first_line(error)})"
        raise VidiffInputError(f"{path}: {reason}; {FIX}") from error


def find_broken_weights(folder: str | os.PathLike, every_file: bool = False) -> tuple[Path, str] | None:
    """(path, what is wrong) of the first weights file under `folder` that cannot be read, or None. In a folder
    holding safetensors, pickles beside them are not looked at (the loaders take the safetensors) unless
    `every_file` (a training checkpoint reads all its files)."""
    folder = Path(folder)
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    weights = [p for p in files if p.suffix in SAFETENSORS + PICKLES]
    with_safetensors = {p.parent for p in weights if p.suffix in SAFETENSORS}
    for path in weights:
        if path.suffix in PICKLES and path.parent in with_safetensors and not every_file:
            continue
        problem = weights_problem(path)
        if problem is not None:
            return path, problem
    return None


def weights_problem(path: Path) -> str | None:
    """What is wrong with one weights file, or None if it reads. Safetensors: the header and that the data covers
    it. Pickles: loaded weights-only (memory-mapped where the format allows), never run."""
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    if path.suffix in SAFETENSORS:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # SafetensorError, or OSError from the mmap
            return f"not a readable safetensors file ({_first_line(error)})"
        return None
    import pickle
    import zipfile

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        detail = _first_line(error)
        if "weights only" in detail.lower() or "unsupported global" in detail.lower():
            return ("a pickle that holds more than tensors, so it is not loaded (only weights are; it could run "
                    "code); convert it to safetensors")
        return f"not a readable weights file ({detail})"
    except Exception as error:  # truncated archives, damaged pickles
        return f"not a readable weights file ({type(error).__name__}: {_first_line(error)})"
    return None


def save_safetensors(tensors: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None,
                     overwrite: bool = True) -> Path:
    """Write `tensors` as a safetensors file atomically, with the header's keys sorted, so that the same weights and
    metadata always give the same bytes, and with the umask's permissions."""
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (length - len(text))  # the same length (same content, reordered); safetensors pads with spaces
    if len(text) != length:
        raise RuntimeError(f"re-serialised safetensors header is {len(text)} bytes, not {length}")
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data[:8] + text + data[8 + length :])
    return Path(path)


def _first_line(error: BaseException) -> str:
    """The first sentence of the error's first line (library messages go on to advice that does not apply)."""
    lines = str(error).strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".")[:200] if lines else type(error).__name__
