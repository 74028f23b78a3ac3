"""The shapes world keeps its contract (DESIGN.md, "The shapes world"), measured from the pixels."""

import numpy as np
import pytest

from vidiff.data.shapes import (
    ALL_COMBOS,
    COLOURS,
    DIRECTION_VECTORS,
    HELD_OUT,
    TRAIN_COMBOS,
    ShapesDataset,
    caption,
    combinations,
    parse_caption,
    render_clip,
    write_shapes_folder,
)

SOME_COMBOS = [
    ("red", "circle", "right"),
    ("blue", "square", "up"),
    ("white", "triangle", "left"),
    ("cyan", "circle", "down"),
]


def coverage(frames: np.ndarray, colour: str) -> np.ndarray:
    """Per-pixel coverage (f, h, w) read back from the blend rgb * coverage over black."""
    return frames.max(axis=-1) / max(COLOURS[colour])


def test_same_seed_same_clip_other_seed_other_clip():
    a = render_clip("red", "circle", "right", seed=3)
    assert a.dtype == np.uint8 and a.shape == (16, 64, 64, 3)
    np.testing.assert_array_equal(a, render_clip("red", "circle", "right", seed=3))
    assert not np.array_equal(a, render_clip("red", "circle", "right", seed=4))


@pytest.mark.parametrize("colour, shape, direction", SOME_COMBOS)
@pytest.mark.parametrize("seed", [0, 1])
def test_clip_keeps_the_contract(colour, shape, direction, seed):
    size = 64
    frames, info = render_clip(colour, shape, direction, size=size, seed=seed, return_info=True)
    rgb = np.array(COLOURS[colour])
    touched = frames.max(axis=-1) > 0  # (f, h, w)

    # only the object's colour, blended over pure black: every pixel is rgb * coverage
    cov = coverage(frames, colour)
    np.testing.assert_allclose(frames, np.rint(cov[..., None] * rgb), atol=1)
    # fully covered pixels are exactly the named colour, and there are many of them
    full = np.all(frames == rgb, axis=-1)
    assert full.sum(axis=(1, 2)).min() >= 0.2 * (0.25 * size) ** 2
    # the frame border stays black: the object is wholly inside in every frame
    assert not touched[:, 0].any() and not touched[:, -1].any()
    assert not touched[:, :, 0].any() and not touched[:, :, -1].any()
    # background far from the ground-truth box is exactly black
    for t, (x0, y0, x1, y1) in enumerate(info["bboxes"]):
        rows, cols = np.nonzero(touched[t])
        assert rows.min() >= np.floor(y0) and rows.max() < np.ceil(y1)
        assert cols.min() >= np.floor(x0) and cols.max() < np.ceil(x1)

    # size: the bounding box of the (at least half) covered pixels is 25-35 % of the side, to a pixel
    for t in range(len(frames)):
        rows, cols = np.nonzero(cov[t] >= 0.5)
        side = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
        assert 0.25 * size - 1 <= side <= 0.35 * size + 1

    # motion: the coverage-weighted centroid travels about half the side, in the captioned direction, at a
    # constant speed
    ys, xs = np.mgrid[:size, :size] + 0.5
    mass = cov.sum(axis=(1, 2))
    centroids = np.stack([(cov * xs).sum(axis=(1, 2)) / mass, (cov * ys).sum(axis=(1, 2)) / mass], axis=1)
    steps = np.diff(centroids, axis=0)  # (f - 1, 2)
    unit = np.array(DIRECTION_VECTORS[direction])
    travel = (centroids[-1] - centroids[0]) @ unit / size
    assert 0.4 <= travel <= 0.6
    assert np.abs(steps @ np.abs(unit[::-1])).max() < 0.05  # no drift across the motion
    along = steps @ unit
    assert along.min() > 0 and along.std() < 0.05 * along.mean()


@pytest.mark.parametrize("size", [16, 32, 64, 256])
def test_any_size_renders_antialiased(size):
    for seed, (colour, shape, direction) in enumerate(SOME_COMBOS):
        frames = render_clip(colour, shape, direction, num_frames=4, size=size, seed=seed)
        assert frames.shape == (4, size, size, 3)
        cov = coverage(frames, colour)
        assert ((cov > 0.05) & (cov < 0.95)).any(), "edges should be anti-aliased"
        assert (cov == 1).any() and (cov == 0).any()


def test_any_length_covers_half_the_side():
    for num_frames in (1, 2, 8, 33):
        _, info = render_clip("green", "square", "down", num_frames=num_frames, seed=5, return_info=True)
        assert len(info["centres"]) == num_frames
        travel = (info["centres"][-1][1] - info["centres"][0][1]) / 64
        assert travel == pytest.approx(0.5 if num_frames > 1 else 0.0)


def test_info_matches_the_pixels():
    frames, info = render_clip("yellow", "square", "right", size=64, seed=2, return_info=True)
    assert info["caption"] == "a yellow square moving right"
    assert 0.25 * 64 <= info["object_size"] <= 0.35 * 64
    # the coverage of a square sums to its area
    np.testing.assert_allclose(coverage(frames, "yellow").sum(axis=(1, 2)), info["object_size"] ** 2, rtol=0.03)


def test_triangle_points_up():
    frames = render_clip("magenta", "triangle", "right", size=64, seed=0)
    for frame in frames:
        widths = (coverage(frame[None], "magenta")[0] >= 0.5).sum(axis=1)
        rows = np.nonzero(widths)[0]
        top, bottom = widths[rows[: len(rows) // 3]], widths[rows[-len(rows) // 3 :]]
        assert top.mean() < 0.5 * bottom.mean()
        assert np.all(np.diff(widths[rows]) >= -1)  # widths grow from the apex down


def test_held_out_combinations_compose_from_training_words():
    assert len(ALL_COMBOS) == 84 and len(set(ALL_COMBOS)) == 84
    assert len(HELD_OUT) == 8 and len(set(HELD_OUT)) == 8
    assert set(HELD_OUT).isdisjoint(TRAIN_COMBOS)
    assert set(HELD_OUT) | set(TRAIN_COMBOS) == set(ALL_COMBOS)
    assert combinations("train") == list(TRAIN_COMBOS) and combinations("heldout") == list(HELD_OUT)
    assert combinations("all") == list(ALL_COMBOS)
    for colour, shape, direction in HELD_OUT:
        # every pair of words (hence every word) of a held-out caption occurs together in training
        assert any(c == colour and s == shape for c, s, _ in TRAIN_COMBOS)
        assert any(c == colour and d == direction for c, _, d in TRAIN_COMBOS)
        assert any(s == shape and d == direction for _, s, d in TRAIN_COMBOS)
    with pytest.raises(ValueError, match="split"):
        combinations("test")


def test_captions_round_trip():
    for combo in ALL_COMBOS:
        assert parse_caption(caption(*combo)) == combo
    assert caption("red", "circle", "right") == "a red circle moving right"
    assert parse_caption("  A Red circle   moving right ") == ("red", "circle", "right")
    for bad in ["a purple circle moving right", "a red hexagon moving up", "a red circle moving sideways",
                "red circle moving right", "a red circle", ""]:
        with pytest.raises(ValueError):
            parse_caption(bad)
    with pytest.raises(ValueError, match="colour"):
        caption("purple", "circle", "up")
    with pytest.raises(ValueError, match="shape"):
        render_clip("red", "hexagon", "up")


def test_dataset_is_deterministic_and_keeps_to_its_split():
    data = ShapesDataset(100, num_frames=4, size=32, split="train", seed=7)
    assert len(data) == 100
    item = data[3]
    assert set(item) == {"video", "caption", "colour", "shape", "direction"}
    assert item["video"].shape == (4, 32, 32, 3) and item["video"].dtype == np.uint8
    assert item["caption"] == caption(item["colour"], item["shape"], item["direction"])
    np.testing.assert_array_equal(item["video"], ShapesDataset(100, 4, 32, "train", seed=7)[3]["video"])
    assert not np.array_equal(item["video"], ShapesDataset(100, 4, 32, "train", seed=8)[3]["video"])
    np.testing.assert_array_equal(data[-1]["video"], data[99]["video"])
    combos = [(data[i]["colour"], data[i]["shape"], data[i]["direction"]) for i in range(len(data))]
    assert set(combos) == set(TRAIN_COMBOS)  # 100 clips cycle through all 76 training combinations
    heldout = ShapesDataset(8, num_frames=2, size=16, split="heldout")
    assert {(heldout[i]["colour"], heldout[i]["shape"], heldout[i]["direction"]) for i in range(8)} == set(HELD_OUT)
    with pytest.raises(IndexError):
        data[100]


def test_write_shapes_folder_with_a_fake_writer(tmp_path):
    written = []

    def fake_writer(frames, path, fps):
        written.append(fps)
        np.save(path.with_suffix(".npy"), frames)

    paths = write_shapes_folder(tmp_path / "shapes", 5, num_frames=3, size=16, seed=1, fps=4, writer=fake_writer)
    assert len(paths) == 5 and written == [4] * 5
    assert sorted(p.name for p in (tmp_path / "shapes").glob("*.npy")) == [f"clip_0000{i}.npy" for i in range(5)]
    reference = ShapesDataset(5, num_frames=3, size=16, seed=1)
    for i, path in enumerate(paths):
        assert path.with_suffix(".txt").read_text() == reference[i]["caption"] + "\n"
        np.testing.assert_array_equal(np.load(path.with_suffix(".npy")), reference[i]["video"])
