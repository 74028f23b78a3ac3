"""Interpolation baselines and scores: keyframes kept, blending exact, optical flow recovering motion."""

import numpy as np
import pytest

from vidiff.data.shapes import render_clip
from vidiff.eval.interpolation import (
    BASELINE_FUNCTIONS,
    blend_frames,
    farneback_frames,
    missing_frames,
    repeat_frames,
    score_frames,
)


def test_every_baseline_returns_n_minus_1_times_k_plus_1_frames_with_the_keyframes_in_place():
    keyframes = render_clip("red", "square", "right", num_frames=13, size=32, seed=0)[::4]
    for name, method in BASELINE_FUNCTIONS.items():
        out = method(keyframes, 4)
        assert out.shape == (13, 32, 32, 3) and out.dtype == np.uint8, name
        assert np.array_equal(out[::4], keyframes), name


def test_repeat_holds_and_blend_mixes_linearly():
    a, b = np.zeros((1, 2, 2, 3), np.uint8), np.full((1, 2, 2, 3), 200, np.uint8)
    keyframes = np.concatenate([a, b])
    assert np.array_equal(repeat_frames(keyframes, 4)[1:4], np.repeat(a, 3, axis=0))
    assert [int(f[0, 0, 0]) for f in blend_frames(keyframes, 4)] == [0, 50, 100, 150, 200]


def test_optical_flow_recovers_a_translation_that_blending_ghosts():
    truth = render_clip("white", "square", "right", num_frames=16, size=64, seed=1)[:13]
    flow = score_frames(farneback_frames(truth[::4], 4), truth, 4)
    blend = score_frames(blend_frames(truth[::4], 4), truth, 4)
    assert flow["psnr"] > blend["psnr"] + 5 and flow["ssim"] > blend["ssim"]


def test_scores_cover_only_the_missing_frames():
    truth = render_clip("blue", "circle", "up", num_frames=9, size=32, seed=0)
    assert list(missing_frames(9, 4)) == [1, 2, 3, 5, 6, 7]
    perfect = score_frames(truth, truth, 4)
    assert perfect == {"psnr": 100.0, "ssim": pytest.approx(1.0)}
    spoiled = truth.copy()
    spoiled[::4] = 255  # keyframes are known to every method: not scored
    assert score_frames(spoiled, truth, 4) == perfect
    with pytest.raises(ValueError, match="differ in shape"):
        score_frames(truth[:5], truth, 4)
