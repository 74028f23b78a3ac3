"""A run's output folder across runs: start, resume, or start over, and what may change between them.

- A new run refuses an output that already holds a run (`--resume` continues it, `--overwrite` starts over).
- A resumed run must compute what the run computed: settings that would change it are refused, all in one line
  with their old and new values. Bookkeeping (`RESUMABLE_CHANGES`: steps, checkpoints, logging, validation) may
  change; each change is recorded in `history.jsonl`, and `config.json` keeps the run's original settings.
- Temporaries of writers that were killed (a checkpoint or the final model half written) are removed on start and
  on resume, and reported.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from vidiff.atomic import remove_stale_temporaries, write_text
from vidiff.config import TrainConfig
from vidiff.errors import VidiffInputError, check_free_space
from vidiff.training.checkpoints import list_checkpoints
from vidiff.weights import find_broken_weights

CONFIG_FILE = "config.json"  # the run's settings as it started
HISTORY_FILE = "history.jsonl"  # one line per start and resume, with the settings that changed
# What a run writes into its output folder ("vidiff": its TensorBoard logs); --overwrite removes these, nothing else.
RUN_ENTRIES = (CONFIG_FILE, HISTORY_FILE, "checkpoints", "model", "temporal.safetensors", "train_summary.json",
               "validation", "vidiff")
# Settings a resumed run may change: when it stops, how often it checkpoints, logs and samples, where it writes, and
# how many loader processes read the data. Every other setting changes what the run computes.
RESUMABLE_CHANGES = ("max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "validation_every",
                     "validation_prompts", "validation_seeds", "validation_steps", "num_workers", "output")


def prepare_run(config: TrainConfig, resume: bool | str, overwrite: bool = False,
                main_process: bool = True) -> Path | None:
    """Check the output folder before anything is loaded; returns the checkpoint to resume from, or None.

    resume: False, True / "latest" (the newest checkpoint in the output), or a checkpoint folder. overwrite: start
    over in an output that holds a run, removing what the run wrote there (main process only).
    """
    output = Path(config.output)
    checkpoint = find_checkpoint(output, resume)
    if checkpoint is not None:
        check_checkpoint_files(checkpoint)
        refused = {key: change for key, change in changed_settings(config, checkpoint).items()
                   if key not in RESUMABLE_CHANGES}
        if refused:
            listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in refused.items())
            raise VidiffInputError(f"cannot resume from {checkpoint}: these settings differ from the run's and would "
                                   f"change what it computes: {listed}; set them back, or start a new run in "
                                   "another output")
    else:
        earlier = [name for name in RUN_ENTRIES if (output / name).exists()]
        if earlier and not overwrite:
            raise FileExistsError(f"{output} already holds a run ({', '.join(earlier)}); pass --resume to continue "
                                  "it, --overwrite to start over, or choose another output")
        if earlier and main_process:
            for name in earlier:
                path = output / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            _say(f"--overwrite: removed the earlier run's {', '.join(earlier)} from {output}")
    if main_process:
        remove_leftovers(output)
    return checkpoint


def find_checkpoint(output: Path, resume: bool | str) -> Path | None:
    """The checkpoint `resume` names: None, the newest in `output` (True / "latest"), or the folder given."""
    if not resume:
        return None
    if resume is True or resume == "latest":
        found = list_checkpoints(output)
        if not found:
            raise FileNotFoundError(f"nothing to resume: no checkpoints under {output / 'checkpoints'} (start over "
                                    "with --overwrite)")
        return found[-1]
    checkpoint = Path(resume)
    if not (checkpoint / "state.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a complete vidiff checkpoint (no state.json)")
    return checkpoint


def check_checkpoint_files(checkpoint: Path) -> None:
    """Refuse, before any model is loaded, a checkpoint with a file that will not load, naming it and an earlier
    checkpoint to resume from."""
    broken = find_broken_weights(checkpoint, every_file=True)
    if broken is None:
        return
    path, reason = broken
    earlier = [c for c in list_checkpoints(checkpoint.parent) if c.name < checkpoint.name]
    instead = f"resume from an earlier one (--resume {earlier[-1]})" if earlier else "start over with --overwrite"
    raise VidiffInputError(f"{path}: {reason}; {instead}")


def checkpoint_settings(checkpoint: Path) -> dict[str, Any] | None:
    """The settings the run had when it wrote `checkpoint`: recorded in the checkpoint, else (checkpoints written
    before they recorded them) the run's config.json with the changes in its history; None if neither is there."""
    state = _read_json(checkpoint / "state.json")
    if isinstance(state.get("config"), dict):
        return state["config"]
    run = checkpoint.parent.parent
    if not (run / CONFIG_FILE).is_file():
        return None
    settings = _read_json(run / CONFIG_FILE)
    for entry in read_history(run):
        settings.update({key: new for key, (_, new) in entry.get("changed", {}).items()})
    return settings


def changed_settings(config: TrainConfig, checkpoint: Path) -> dict[str, tuple[Any, Any]]:
    """{key: (the run's value, this config's value)} for every setting that differs from the checkpoint's run. A key
    the run did not record (added to vidiff since) counts as its default."""
    saved = checkpoint_settings(checkpoint)
    if saved is None:
        _say(f"warning: {checkpoint} records no settings, so they cannot be compared with this run's")
        return {}
    defaults = {f.name: _default(f) for f in dataclasses.fields(TrainConfig)}
    current = vars(config)
    return {key: (saved.get(key, defaults.get(key)), value) for key, value in current.items()
            if _comparable(saved.get(key, defaults.get(key))) != _comparable(value)}


def record_run(output: Path, config: TrainConfig, checkpoint: Path | None, step: int) -> None:
    """config.json for a new run; for every start and resume a line of history.jsonl, with the settings a resume
    changed (old and new), so that the original settings are never overwritten."""
    output.mkdir(parents=True, exist_ok=True)
    if checkpoint is None or not (output / CONFIG_FILE).is_file():
        write_text(output / CONFIG_FILE, json.dumps(vars(config), indent=2) + "\n")
    entry: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": "resume" if checkpoint else "start",
                             "step": step}
    if checkpoint is not None:
        entry["checkpoint"] = str(checkpoint)
        entry["changed"] = {key: [old, new] for key, (old, new) in changed_settings(config, checkpoint).items()}
    with open(output / HISTORY_FILE, "a") as history:
        history.write(json.dumps(entry) + "\n")


def read_history(output: Path) -> list[dict]:
    path = Path(output) / HISTORY_FILE
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return entries


def check_checkpoint_fits(saved: dict, trained: dict, optimizer, checkpoint: Path) -> None:
    """Refuse a checkpoint whose weights or optimizer state do not fit this run's trained parameters."""
    missing, unexpected = sorted(set(trained) - set(saved["params"])), sorted(set(saved["params"]) - set(trained))
    if missing or unexpected:
        raise VidiffInputError(f"{checkpoint} holds other trained weights than this run trains ({len(missing)} "
                               f"missing, e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); "
                               "resume with the run's own settings")
    for name, param in trained.items():
        if tuple(saved["params"][name].shape) != tuple(param.shape):
            raise VidiffInputError(f"{checkpoint}: {name} has shape {tuple(saved['params'][name].shape)}, this run's "
                                   f"has {tuple(param.shape)}")
    groups = saved["optimizer"].get("param_groups", []) if isinstance(saved.get("optimizer"), dict) else []
    if [len(g.get("params", [])) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        raise VidiffInputError(f"{checkpoint / 'optimizer.pt'} holds the optimizer state of other parameter groups "
                               "than this run's; resume with the run's own settings")


def check_room_for_run(config: TrainConfig, trained: dict) -> None:
    """Before training: refuse when the output's file system has less room than the run will write: up to
    keep_checkpoints + 1 checkpoints at once (trained weights, EMA, AdamW's two moments, all fp32), less those
    already there, plus the final model folder (about the size of the model trained from)."""
    output = Path(config.output)
    per_checkpoint = sum(p.numel() for p in trained.values()) * 4 * (3 + bool(config.ema))
    existing = sum(p.stat().st_size for c in list_checkpoints(output) for p in c.iterdir() if p.is_file())
    model = sum(p.stat().st_size for p in Path(config.model).rglob("*") if p.is_file())
    needed = max(per_checkpoint * (config.keep_checkpoints + 1) - existing, per_checkpoint) + model
    check_free_space(output, needed)


def remove_leftovers(output: Path) -> None:
    """Remove the temporaries that killed writers left in the run's folders, and say so."""
    removed = [item for folder in (output, output / "checkpoints", output / "validation")
               for item in remove_stale_temporaries(folder)]
    if removed:
        size = sum(bytes_ for _, bytes_ in removed)
        names = ", ".join(str(path.relative_to(output)) for path, _ in removed)
        _say(f"removed {len(removed)} leftover temporar{'y' if len(removed) == 1 else 'ies'} of killed writers "
             f"({size / 1e6:.1f} MB) from {output}: {names}")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else None


def _comparable(value: Any) -> Any:
    """Values as JSON holds them (tuples are lists, 1 == 1.0), so a value read back compares equal to itself."""
    return json.loads(json.dumps(value))


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise VidiffInputError(f"{path} is not valid JSON ({error.msg}); the checkpoint is damaged") from None
    if not isinstance(value, dict):
        raise VidiffInputError(f"{path} must hold a JSON object; the checkpoint is damaged")
    return value


def _say(message: str) -> None:
    print(f"vidiff train: {message}", file=sys.stderr)
