"""Training checkpoints: one folder per step, built beside its final name and renamed into place.

A checkpoint holds the trained parameters and EMA weights (safetensors), the optimizer and LR-schedule state
(`torch.save`, read back with `weights_only=True`), and `state.json` (step, data position). Randomness in the
trainer is a pure function of (seed, step, process), so no generator state needs saving beyond torch's global one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vidiff.atomic import atomic_dir
from vidiff.weights import read_weights

PREFIX = "step-"


def checkpoint_dir(output: Path, step: int) -> Path:
    return output / "checkpoints" / f"{PREFIX}{step:08d}"


def list_checkpoints(output: Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written ones never carry the final name)."""
    folder = output / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file())


def save_checkpoint(output: Path, step: int, params: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
                    optimizer: torch.optim.Optimizer, lr_scheduler, state: dict[str, Any], keep: int) -> Path:
    """Write the checkpoint for `step` atomically, then delete all but the newest `keep`."""
    target = checkpoint_dir(output, step)
    with atomic_dir(target, overwrite=True) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in params.items()}, tmp / "trainable.safetensors")
        if ema is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()}, tmp / "ema.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    for old in list_checkpoints(output)[:-keep]:
        shutil.rmtree(old)
    return target


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint folder: `params`, `ema` (or None), `optimizer`, `lr_scheduler`, `torch_rng`, `state`."""
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path} is not a complete vidiff checkpoint (no state.json)")
    extra = read_weights(path / "optimizer.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True))
    ema_path = path / "ema.safetensors"
    return {
        "params": read_weights(path / "trainable.safetensors", load_file),
        "ema": read_weights(ema_path, load_file) if ema_path.is_file() else None,
        "state": json.loads((path / "state.json").read_text()),
        **extra,
    }
