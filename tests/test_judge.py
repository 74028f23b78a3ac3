"""The pixel judge reads the shapes world's ground truth back from rendered clips, and flags what is wrong."""

import json

import numpy as np
import pytest

from vidiff.data.shapes import ALL_COMBOS, HELD_OUT, caption, render_clip
from vidiff.eval import judge
from vidiff.eval.judge import judge_clip, summarize, to_markdown


def judge_world(size: int, seeds) -> list[dict]:
    return [
        judge_clip(render_clip(*combo, size=size, seed=seed), caption(*combo))
        for seed in seeds
        for combo in ALL_COMBOS
    ]


def test_judge_reads_every_combination_at_64():
    results = judge_world(64, seeds=[0, 1])
    summary = summarize(results)
    assert summary["all"]["n"] == 168 and summary["heldout"]["n"] == 2 * len(HELD_OUT)
    for metric in ("colour", "shape", "direction", "all", "single_object"):
        assert summary["all"][metric] == 1.0, metric
    assert all(r["direction_confidence"] > 0.99 for r in results)
    assert all(0.4 < abs(sum(r["displacement"])) < 0.6 for r in results)  # half a side, along one axis
    assert all(r["colour_agreement"] == r["shape_agreement"] == 1.0 for r in results)


def test_judge_reads_small_frames():
    summary = summarize(judge_world(32, seeds=[2]))
    for metric in ("colour", "shape", "direction", "single_object"):
        assert summary["all"][metric] >= 0.9, metric


def test_result_is_plain_json_and_matches_the_ground_truth():
    frames, info = render_clip("cyan", "square", "left", size=64, seed=3, return_info=True)
    result = judge_clip(frames, info["caption"])
    json.dumps(result)
    assert result["expected"] == {"colour": "cyan", "shape": "square", "direction": "left"}
    assert result["object_count"] == [1] * 16 and result["single_ok"] and result["all_ok"]
    # a square's centroid is its centre, and its soft area its side squared
    np.testing.assert_allclose(result["centroids"], info["centres"], atol=0.05)
    np.testing.assert_allclose(result["areas"], info["object_size"] ** 2, rtol=0.02)
    np.testing.assert_allclose(result["displacement"], [-0.5, 0.0], atol=0.01)


def test_two_objects_are_counted():
    a = render_clip("red", "circle", "right", num_frames=8, size=32, seed=0)
    b = render_clip("blue", "square", "down", num_frames=8, size=32, seed=1)
    frames = np.zeros((8, 64, 64, 3), dtype=np.uint8)
    frames[:, :32, :32] = a
    frames[4:, 32:, 32:] = b[4:]  # the second object shows up half-way through
    result = judge_clip(frames, "a red circle moving right")
    assert result["object_count"] == [1] * 4 + [2] * 4
    assert result["single_object_fraction"] == 0.5 and not result["single_ok"]
    assert result["colour"] in ("red", "blue")  # attributes come from the largest object of each frame


def test_ghost_frame_shows_two_objects():
    frames = render_clip("green", "triangle", "up", size=64, seed=4)
    ghost = ((frames[0].astype(np.uint16) + frames[-1]) // 2).astype(np.uint8)
    result = judge_clip(np.stack([frames[0], ghost, frames[-1]]))
    assert result["object_count"] == [1, 2, 1]


def test_specks_are_ignored():
    frames = render_clip("yellow", "circle", "down", num_frames=4, size=64, seed=0)
    frames[:, 1, 1:3] = 255  # a two-pixel speck in the corner
    result = judge_clip(frames, "a yellow circle moving down")
    assert result["object_count"] == [1] * 4 and result["all_ok"]


def test_static_object_does_not_move():
    frame = render_clip("white", "triangle", "left", num_frames=1, size=64, seed=0)
    result = judge_clip(np.repeat(frame, 8, axis=0), "a white triangle moving left")
    assert result["direction"] == "none" and result["direction_confidence"] == 0.0
    assert result["colour_ok"] and result["shape_ok"] and not result["direction_ok"] and not result["all_ok"]
    assert result["flicker"] == 0.0 and result["area_flicker"] == 0.0


def test_black_clip_has_no_object():
    result = judge_clip(np.zeros((6, 32, 32, 3), dtype=np.uint8), "a red circle moving right")
    assert result["object_count"] == [0] * 6 and result["single_object_fraction"] == 0.0
    assert result["colour"] is None and result["shape"] is None and result["direction"] == "none"
    assert not (result["colour_ok"] or result["shape_ok"] or result["direction_ok"] or result["single_ok"])
    assert result["flicker"] == 0.0
    json.dumps(result)


def test_flicker_is_high_for_noise():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    result = judge_clip(noise[[0, 1, 0, 1, 0, 1]])
    assert result["flicker"] > 0.25  # about 1/3 for independent uniform noise
    moving = judge_clip(render_clip("red", "square", "up", size=64, seed=0))
    assert 0 < moving["flicker"] < 0.05 and moving["area_flicker"] < 0.01


def test_numpy_labelling_matches_scipy(monkeypatch):
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    mask = rng.random((4, 40, 48)) > 0.5
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within each frame
    theirs, count = ndimage.label(mask, structure=structure)
    ours = judge._label_numpy(mask)
    assert ((ours > 0) == mask).all() and ours.max() == count
    assert len(set(zip(ours[mask], theirs[mask]))) == count  # the same partition into components
    # and the judge reads the same with either
    clips = [render_clip(*combo, size=32, seed=0) for combo in ALL_COMBOS[::7]]
    with_scipy = [judge_clip(clip) for clip in clips]
    monkeypatch.setattr(judge, "label_components", judge._label_numpy)
    assert [judge_clip(clip) for clip in clips] == with_scipy


def test_summary_and_table():
    combos = [HELD_OUT[0], ("red", "circle", "right")]
    results = [judge_clip(render_clip(*c, num_frames=4, size=32), caption(*c)) for c in combos]
    results.append(judge_clip(np.zeros((4, 32, 32, 3), dtype=np.uint8), "a red circle moving right"))
    summary = summarize(results)
    assert summary["heldout"]["n"] == 1 and summary["heldout"]["all"] == 1.0
    assert summary["seen"]["n"] == 2 and summary["seen"]["colour"] == 0.5 and summary["seen"]["single_object"] == 0.5
    assert summarize(results, heldout=[False] * 3)["heldout"] == {"n": 0, **dict.fromkeys(judge.SUMMARY_METRICS)}
    table = to_markdown(summarize(results, heldout=[False] * 3))
    assert table.splitlines()[0].startswith("| combos | clips | colour")
    assert "| seen | 3 | 66.7 % |" in table and "| held-out | 0 | - |" in table
    with pytest.raises(ValueError, match="caption"):
        summarize([judge_clip(np.zeros((2, 16, 16, 3), dtype=np.uint8))])
    with pytest.raises(ValueError, match="heldout"):
        summarize(results, heldout=[True])


def test_bad_input_fails_loudly():
    with pytest.raises(ValueError, match="uint8"):
        judge_clip(np.zeros((4, 16, 16, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        judge_clip(np.zeros((16, 16, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="caption"):
        judge_clip(np.zeros((4, 16, 16, 3), dtype=np.uint8), "a purple blob moving up")
