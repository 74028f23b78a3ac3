"""Kill a training run with SIGKILL at chosen moments, resume it each time, and compare it bit for bit with a run that
was never killed: the test in tests/test_kill_resume.py (3 kills) and scripts/kill_resume.py (the README figure).

Each run is a child process running `vidiff train` with two hooks that change nothing it computes: every loss
computation appends "step" to an events file, and a checkpoint write appends "checkpoint NAME" once its first
file is written, then, when told to (from a given step on), waits there to be killed: a kill inside a checkpoint
write. The parent reads the events to kill during a step (after a random delay into it) or inside a checkpoint
write.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from vidiff.training.checkpoints import list_checkpoints

CHILD = """
import os, sys, time
from pathlib import Path
import vidiff.training.checkpoints as checkpoints
import vidiff.training.trainer as trainer

events, wait_from = Path(sys.argv[1]), int(sys.argv[2])  # wait in the first checkpoint at or after that step

def note(line):
    with open(events, "a") as file:
        file.write(line + "\\n")

real_loss, real_save = trainer._loss, checkpoints.save_file

def loss(*args, **kwargs):
    note("step")
    return real_loss(*args, **kwargs)

def save_file(tensors, path, *args, **kwargs):
    real_save(tensors, path, *args, **kwargs)
    if Path(path).name == "trainable.safetensors":  # the checkpoint's folder is half written now
        step = int(Path(path).parent.name.split("~")[0].rsplit("-", 1)[1])  # .step-00000004~host~pid~xxxx.tmp
        note(f"checkpoint {step}")
        if 0 <= wait_from <= step:
            time.sleep(600)

trainer._loss, checkpoints.save_file = loss, save_file
from vidiff.cli import main
sys.exit(main(sys.argv[3:]))
"""


@dataclasses.dataclass
class Kill:
    """Where to kill: `delay_s` into the step at `fraction` of the steps this run has left, or (`in_checkpoint`)
    inside the write of the first checkpoint at or after global step `from_step`."""

    fraction: float = 0.5
    delay_s: float = 0.0
    in_checkpoint: bool = False
    from_step: int = 0


def train_args(model: Path, data: Path, output: Path, max_steps: int, checkpoint_every: int) -> list[str]:
    """A tiny run that keeps every checkpoint, so that each can be compared."""
    return ["train", f"model={model}", f"data={data}", f"output={output}", f"max_steps={max_steps}",
            f"checkpoint_every={checkpoint_every}", "keep_checkpoints=1000", "num_frames=4", "frame_stride=1",
            "resolution=32", "batch_size=1", "log_every=1", "learning_rate=1e-3", "ema=true", "caption_dropout=0.5",
            "lr_scheduler=cosine", "lr_warmup_steps=2"]


def run(args: list[str], events: Path, kill: Kill | None = None, steps_left: int = 1,
        timeout_s: float = 900) -> dict:
    """Run `vidiff train` in a child process, killing it as `kill` says (`steps_left`: the steps this run has to
    go); returns what happened."""
    events.unlink(missing_ok=True)
    events.touch()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    wait = str(kill.from_step) if kill is not None and kill.in_checkpoint else "-1"
    # a step before the last, so that the delay into it still falls inside the run
    at_step = min(max(1, math.ceil(kill.fraction * steps_left)), max(1, steps_left - 1)) if kill else 0
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(events), wait, *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.monotonic() + timeout_s, None
    try:
        while kill is not None and child.poll() is None and time.monotonic() < deadline:
            lines = events.read_text().splitlines()
            written = [int(line.split()[1]) for line in lines if line.startswith("checkpoint")]
            if kill.in_checkpoint and any(step >= kill.from_step for step in written):
                # the child waits in the first checkpoint at or after from_step (earlier ones it wrote whole)
                step = next(step for step in written if step >= kill.from_step)
                killed = f"inside the write of the step-{step} checkpoint"
            elif not kill.in_checkpoint and lines.count("step") >= at_step:
                time.sleep(kill.delay_s)
                killed = f"{kill.delay_s:.2f} s into step {at_step} of the {steps_left} this run had left"
            if killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        out, err = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
    return {"returncode": child.returncode, "killed": killed, "stdout": out, "stderr": err,
            "steps": events.read_text().splitlines().count("step")}


def random_kills(count: int, max_steps: int, rng: random.Random, step_s: float = 0.5,
                 in_checkpoint: int = 1) -> list[Kill]:
    """`count` kills at random points of the steps left and random delays into the step (up to `step_s`), of which
    `in_checkpoint` (at random places in the list) are inside the write of a checkpoint from a random step on."""
    kills = [Kill(rng.random(), rng.uniform(0, step_s)) for _ in range(count)]
    for index in rng.sample(range(count), in_checkpoint):
        kills[index] = Kill(in_checkpoint=True, from_step=rng.randint(1, max_steps))
    return kills


FINAL_FILES = ("temporal.safetensors", "model/unet/diffusion_pytorch_model.safetensors")


def differences(a: Path, b: Path) -> list[str]:
    """What differs between the checkpoints two runs share, and the final weights both have (empty: bit-identical
    so far)."""
    found = []
    ours, theirs = ({c.name: c for c in list_checkpoints(run)} for run in (a, b))
    for name in sorted(set(ours) & set(theirs)):
        found += [f"{name}: {d}" for d in checkpoint_differences(ours[name], theirs[name])]
    for final in FINAL_FILES:
        if (a / final).is_file() and (b / final).is_file() and (a / final).read_bytes() != (b / final).read_bytes():
            found.append(f"{final} differs")
    return found


def checkpoint_differences(a: Path, b: Path) -> list[str]:
    found = []
    for name in ("trainable.safetensors", "ema.safetensors"):
        if (a / name).read_bytes() != (b / name).read_bytes():
            found.append(f"{name} differs")
    first, second = (torch.load(c / "optimizer.pt", weights_only=True) for c in (a, b))
    # torch (2.13) seeds its global generator at random in every process, and training draws nothing from it (its
    # draws come from generators seeded by seed, step and process), so the global state each process recorded is
    # left out; a resumed process restores the killed one's
    first.pop("torch_rng", None), second.pop("torch_rng", None)
    if not _equal(first, second):
        found.append("optimizer.pt (optimizer or LR schedule state) differs")
    states = [json.loads((c / "state.json").read_text()) for c in (a, b)]
    for state in states:
        state.get("config", {}).pop("output", None)  # where each run writes
    if states[0] != states[1]:
        found.append("state.json differs")
    return found


def _equal(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return isinstance(y, (list, tuple)) and len(x) == len(y) and all(map(_equal, x, y))
    return x == y


def kill_and_resume(model: Path, data: Path, work: Path, kills: list[Kill], max_steps: int = 8,
                    checkpoint_every: int = 2) -> dict:
    """A straight run and, beside it (another core), one run killed at each of `kills` in turn, resumed after each
    and finally to its end. Returns {"trials": [...], "final": differences}, where each trial records the kill, the
    newest checkpoint it left, the leftovers its resume removed, and how the checkpoints it left differ from the
    straight run's (a chain never rewrites a checkpoint, so they are compared once both runs are done)."""
    straight, killed = work / "straight", work / "killed"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        uninterrupted = pool.submit(run, train_args(model, data, straight, max_steps, checkpoint_every),
                                    work / "straight.events")
        result = _killed_chain(model, data, killed, work, kills, max_steps, checkpoint_every)
        if uninterrupted.result()["returncode"] != 0:
            raise RuntimeError(f"the straight run failed:\n{uninterrupted.result()['stderr'][-3000:]}")
    for trial in result["trials"]:
        left = [killed / "checkpoints" / name for name in trial.pop("checkpoints")]
        trial["differences"] = [f"{c.name}: {d}" for c in left
                                for d in checkpoint_differences(c, straight / "checkpoints" / c.name)]
    missing = [f"{run_.name}/{final} missing" for final in FINAL_FILES for run_ in (killed, straight)
               if not (run_ / final).is_file()]
    result["final"] = differences(killed, straight) + missing
    return result


def _killed_chain(model: Path, data: Path, killed: Path, work: Path, kills: list[Kill], max_steps: int,
                  checkpoint_every: int) -> dict:
    trials, resume, done = [], [], 0
    for kill in kills:
        outcome = run(train_args(model, data, killed, max_steps, checkpoint_every) + resume, work / "killed.events",
                      kill, steps_left=max_steps - done)
        if trials:  # this run's start removed what the previous kill left
            trials[-1]["leftovers_removed_on_resume"] = _removed(outcome["stderr"])
        newest = list_checkpoints(killed)
        done = int(newest[-1].name.split("-")[1]) if newest else 0
        trials.append({"kill": dataclasses.asdict(kill), "killed": outcome["killed"],
                       "returncode": outcome["returncode"], "newest_checkpoint": newest[-1].name if newest else None,
                       "leftovers": [p.name for p in _temporaries(killed)], "checkpoints": [c.name for c in newest]})
        resume = ["--resume"] if newest else ["--overwrite"]  # killed before its first checkpoint: start again
        if done == max_steps and (killed / "train_summary.json").is_file():
            break  # the run got to its end before the kill
    final = run(train_args(model, data, killed, max_steps, checkpoint_every) + resume, work / "killed.events")
    if final["returncode"] != 0:
        raise RuntimeError(f"the last resume failed:\n{final['stderr'][-3000:]}")
    if trials:
        trials[-1]["leftovers_removed_on_resume"] = _removed(final["stderr"])
    return {"trials": trials, "leftovers_after": [p.name for p in _temporaries(killed)]}


def _temporaries(run: Path) -> list[Path]:
    return [p for folder in (run, run / "checkpoints") if folder.is_dir() for p in folder.iterdir()
            if p.name.endswith((".tmp", ".old"))]


def _removed(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "leftover temporar" in line]
