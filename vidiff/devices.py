"""Devices and dtypes by name, as the command line and the evaluation take them."""

from __future__ import annotations

import torch

from vidiff.errors import VidiffInputError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise VidiffInputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:1 or mps") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise VidiffInputError(f"--device {name}: no CUDA device is available here; use auto or cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto': fp16 on a GPU, fp32 on the CPU."""
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in DTYPES:
        raise VidiffInputError(f"unknown dtype {name!r}; choose auto, fp32, fp16 or bf16")
    return DTYPES[name]
