"""kill -9 a tiny training run at random moments, resume it after each kill, and compare it bit for bit with a run
that was never killed: the README's figure (tests/test_kill_resume.py runs the same with 3 kills).

    python scripts/kill_resume.py --trials 20 --seed 0 --json kill_resume.json

Each trial kills the run once: at a random point of the steps it has left, a random delay into that step, or
(--in-checkpoint of them) inside the write of a checkpoint. After each kill the checkpoints the run left must equal
the uninterrupted run's, the next start must remove the temporaries the kill left, and the run resumed to its end
must write the same weights, byte for byte. Runs on the CPU with the tiny test model (about 30 s a trial on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from vidiff.data.shapes import render_clip
from vidiff.io.video import write_video
from vidiff.models.inflate_folder import inflate_model_folder
from vidiff.testing.kill_resume import kill_and_resume, random_kills
from vidiff.testing.tiny import make_tiny_sd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="kills (default 20)")
    parser.add_argument("--in-checkpoint", type=int, help="how many of them inside a checkpoint write "
                        "(default: a quarter)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--max-steps", type=int, help="steps of the run (default: 2 per kill, at least 8)")
    parser.add_argument("--json", help="write the trials here")
    args = parser.parse_args(argv)
    steps = args.max_steps or max(8, 2 * args.trials)
    in_checkpoint = args.in_checkpoint if args.in_checkpoint is not None else max(1, args.trials // 4)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vidiff-kill-") as work:
        work = Path(work)
        model = inflate_model_folder(make_tiny_sd(work / "tiny-sd"), work / "tiny-video", max_frames=16)
        data = work / "clips"
        data.mkdir()
        for i, (colour, shape, direction) in enumerate([("red", "circle", "right"), ("blue", "square", "up")]):
            write_video(render_clip(colour, shape, direction, num_frames=8, size=48, seed=i), data / f"c{i}.mp4")
        kills = random_kills(args.trials, steps, random.Random(args.seed), step_s=0.3, in_checkpoint=in_checkpoint)
        result = kill_and_resume(model, data, work, kills, max_steps=steps, checkpoint_every=2)

    trials = result["trials"]
    killed = [t for t in trials if t["returncode"] == -signal.SIGKILL]
    identical = [t for t in killed if not t["differences"]]
    for number, trial in enumerate(trials, start=1):
        verdict = "identical" if not trial["differences"] else "DIFFERS: " + "; ".join(trial["differences"])
        print(f"{number:2d}. killed {trial['killed'] or '(the run ended first)'}; newest checkpoint "
              f"{trial['newest_checkpoint']}; {len(trial['leftovers'])} leftover(s), removed on resume: "
              f"{'yes' if trial.get('leftovers_removed_on_resume') or not trial['leftovers'] else 'NO'}; {verdict}")
    final = "bit-identical" if not result["final"] else "DIFFERS: " + "; ".join(result["final"])
    print(f"{len(identical)} of {len(killed)} kills resumed bit-identical (seed {args.seed}, {steps} steps); "
          f"final weights {final}; {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "max_steps": steps, **result}, indent=2) + "\n")
    return 0 if len(identical) == len(killed) == len(trials) and not result["final"] else 1


if __name__ == "__main__":
    sys.exit(main())
