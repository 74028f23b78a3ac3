"""Training checkpoints: one folder per step, built beside its final name and renamed into place.

The one checkpoint format of vidiff and its recipes (`write_checkpoint` / `read_checkpoint`): tensors in named
safetensors files (`trainable`, `ema`, ...), the optimizer and LR-schedule state in `optimizer.pt` (`torch.save`,
read back with `weights_only=True`), and `state.json` (step, data position, the settings it was made with).
Randomness in the trainer is a pure function of (seed, step, process), so no generator state needs saving beyond
torch's global one.
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


def write_checkpoint(target: Path, tensors: dict[str, dict[str, torch.Tensor]], extra: dict[str, Any],
                     state: dict[str, Any]) -> Path:
    """Write a checkpoint folder atomically: `<name>.safetensors` for each group of `tensors`, `optimizer.pt` holding
    `extra` (state dicts), and `state.json`."""
    with atomic_dir(target, overwrite=True) as tmp:
        for name, group in tensors.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, tmp / f"{name}.safetensors")
        torch.save(extra, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
    return target


def read_checkpoint(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any], dict[str, Any]]:
    """(tensor groups by file name, optimizer.pt's contents, state.json) of a checkpoint folder."""
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path} is not a complete vidiff checkpoint (no state.json)")
    tensors = {file.stem: read_weights(file, load_file) for file in sorted(path.glob("*.safetensors"))}
    extra = read_weights(path / "optimizer.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True))
    return tensors, extra, json.loads((path / "state.json").read_text())


def save_checkpoint(output: Path, step: int, params: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
                    optimizer: torch.optim.Optimizer, lr_scheduler, state: dict[str, Any], keep: int) -> Path:
    """Write the checkpoint for `step` atomically, then delete all but the newest `keep`."""
    tensors = {"trainable": params, **({"ema": ema} if ema is not None else {})}
    extra = {"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
             "torch_rng": torch.get_rng_state()}
    target = write_checkpoint(checkpoint_dir(output, step), tensors, extra, {**state, "step": step})
    for old in list_checkpoints(output)[:-keep]:
        shutil.rmtree(old)
    return target


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint folder: `params`, `ema` (or None), `optimizer`, `lr_scheduler`, `torch_rng`, `state`."""
    tensors, extra, state = read_checkpoint(path)
    return {"params": tensors["trainable"], "ema": tensors.get("ema"), "state": state, **extra}
