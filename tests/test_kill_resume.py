"""kill -9 during training, resumed, is bit-identical to a run never killed (issue 22): 3 kills at random moments,
one of them inside a checkpoint write, each compared with an uninterrupted run. VIDIFF_KILL_SEED replays a draw;
scripts/kill_resume.py runs the 20-trial version."""

import json
import os
import random
import signal

import pytest

from vidiff.data.shapes import render_clip
from vidiff.io.video import write_video
from vidiff.testing.kill_resume import kill_and_resume, random_kills

MAX_STEPS, CHECKPOINT_EVERY = 8, 2


@pytest.mark.kill
def test_kill_9_at_three_random_moments_resumes_bit_identical(tiny_video_folder, tmp_path):
    data = tmp_path / "clips"
    data.mkdir()
    for i, (colour, shape, direction) in enumerate([("red", "circle", "right"), ("blue", "square", "up")]):
        write_video(render_clip(colour, shape, direction, num_frames=8, size=48, seed=i), data / f"c{i}.mp4", fps=8)
    seed = int(os.environ.get("VIDIFF_KILL_SEED", random.randrange(10**6)))
    kills = random_kills(3, MAX_STEPS, random.Random(seed), step_s=0.3)
    result = kill_and_resume(tiny_video_folder, data, tmp_path, kills, MAX_STEPS, CHECKPOINT_EVERY)
    context = f"VIDIFF_KILL_SEED={seed}: {json.dumps(result, indent=1)}"
    trials = result["trials"]
    assert len(trials) == 3 and all(t["returncode"] == -signal.SIGKILL for t in trials), context
    for trial in trials:  # after each kill, every checkpoint it left equals the uninterrupted run's
        assert trial["differences"] == [], context
    assert result["final"] == [], context  # and the resumed run ends with the same weights, byte for byte
    inside = [t for t in trials if t["kill"]["in_checkpoint"]]
    assert inside and "inside the write" in inside[0]["killed"], context
    assert inside[0]["leftovers"] and inside[0]["leftovers_removed_on_resume"], context  # found and removed
    assert result["leftovers_after"] == [], context
