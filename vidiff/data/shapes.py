"""The shapes world: a procedural video world with ground truth (DESIGN.md, "The shapes world").

Every clip is one filled object (circle, square or upright triangle) in one of seven named colours, moving in a
straight line at constant speed (left, right, up or down) over a uniform black square frame, captioned
`a {colour} {shape} moving {direction}`. A fixed set of combinations is held out of all training, so that
evaluation can ask whether a model composes words it only saw apart.

Geometry, in continuous pixel coordinates: x grows to the right, y grows downward, the frame's top-left corner
is (0, 0) and pixel (row i, column j) covers [j, j + 1) x [i, i + 1), so its centre is (j + 0.5, i + 0.5).
- The object's size `s` is the side of its bounding box (circle diameter, square side, triangle base = height),
  drawn uniformly in SIZE_RANGE (25-35 %) of the frame side.
- Its centre is the centre of that bounding box (for the triangle this is not the centroid, which lies s/6
  below it). The centre moves by TRAVEL (half) of the frame side over the whole clip, whatever its length,
  in equal steps, so clips of any length stay inside the frame. The start is drawn so that the whole path is
  inside the frame, with a one-pixel black border where the frame is large enough (side >= 14).
- Edges are anti-aliased: each pixel's coverage (the fraction of it inside the object) is measured on a
  supersample x supersample sub-pixel grid (computed exactly for the axis-aligned square) and the colour is
  blended over black, `round(rgb * coverage)`. Pixels wholly inside the object are exactly the
  named RGB; pixels the object does not touch are exactly (0, 0, 0).

Nothing here imports torch; frames are numpy `uint8` arrays `(f, h, w, 3)`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidiff.errors import VidiffInputError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "magenta": (210, 50, 210),
    "cyan": (40, 200, 210),
    "white": (235, 235, 235),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
# unit step of each direction in image coordinates (x right, y down), so "up" is negative y
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

SIZE_RANGE = (0.25, 0.35)  # object bounding-box side, as a fraction of the frame side
TRAVEL = 0.5  # distance the centre moves over a clip, as a fraction of the frame side

Combo = tuple[str, str, str]  # (colour, shape, direction)

ALL_COMBOS: tuple[Combo, ...] = tuple(itertools.product(COLOURS, SHAPES, DIRECTIONS))

# Held out of every training run (8 of 84, about 10 %). Chosen by hand so that no two of them share a
# colour-shape, colour-direction or shape-direction pair: every pair of words in a held-out caption therefore
# also occurs together in training (e.g. "red square" moving up, left and right), and only the triple is new.
# Six colours appear once and blue twice; each direction twice; circle and square three times, triangle twice.
# "a red circle moving right", the example caption in the docs, stays a training combination.
HELD_OUT: tuple[Combo, ...] = (
    ("red", "square", "down"),
    ("green", "circle", "left"),
    ("blue", "triangle", "up"),
    ("yellow", "square", "right"),
    ("magenta", "circle", "up"),
    ("cyan", "triangle", "right"),
    ("white", "circle", "down"),
    ("blue", "square", "left"),
)
TRAIN_COMBOS: tuple[Combo, ...] = tuple(c for c in ALL_COMBOS if c not in HELD_OUT)

_CAPTION = re.compile(r"a (\w+) (\w+) moving (\w+)")


def combinations(split: str = "train") -> list[Combo]:
    """The (colour, shape, direction) triples of a split: "train" (76), "heldout" (8) or "all" (84)."""
    splits = {"train": TRAIN_COMBOS, "heldout": HELD_OUT, "all": ALL_COMBOS}
    if split not in splits:
        raise VidiffInputError(f"unknown split {split!r}; expected one of {sorted(splits)}")
    return list(splits[split])


def _check_combo(colour: str, shape: str, direction: str) -> None:
    checks = ((colour, COLOURS, "colour"), (shape, SHAPES, "shape"), (direction, DIRECTIONS, "direction"))
    for value, known, what in checks:
        if value not in known:
            raise VidiffInputError(f"unknown {what} {value!r}; expected one of {list(known)}")


def caption(colour: str, shape: str, direction: str) -> str:
    """`a {colour} {shape} moving {direction}`, e.g. "a red circle moving right"."""
    _check_combo(colour, shape, direction)
    return f"a {colour} {shape} moving {direction}"


def parse_caption(text: str) -> Combo:
    """Inverse of `caption`: (colour, shape, direction). Case and surrounding whitespace are ignored.

    Raises ValueError for text that is not a caption of this world.
    """
    match = _CAPTION.fullmatch(" ".join(text.lower().split()))
    if match is None:
        expected = "'a {colour} {shape} moving {direction}'"
        raise VidiffInputError(f"not a shapes-world caption: {text!r}; expected {expected}")
    colour, shape, direction = match.groups()
    try:
        _check_combo(colour, shape, direction)
    except ValueError as error:
        raise VidiffInputError(f"not a shapes-world caption: {text!r}: {error}") from None
    return colour, shape, direction


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Whether points at offset (dx, dy) from the bounding-box centre lie inside a shape of side 2 * half."""
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # upright triangle, apex (0, -half), base from (-half, half) to (half, half): its half-width grows
    # linearly from 0 at the apex to `half` at the base
    return (dy >= -half) & (dy <= half) & (np.abs(dx) <= (dy + half) / 2)


def _overlap(starts: np.ndarray, low: float, high: float) -> np.ndarray:
    """Length of the overlap of each unit interval [start, start + 1) with [low, high]."""
    return np.clip(np.minimum(starts + 1, high) - np.maximum(starts, low), 0.0, 1.0)


def _coverage(shape: str, cx: float, cy: float, side: float, size: int, supersample: int):
    """Fraction of each pixel covered by the object, inside the object's pixel window: exact for the square,
    measured on a supersample x supersample grid of sub-pixel points for the circle and the triangle.

    Returns (row0, col0, coverage (rows, cols)) so that the window is frame[row0:row0+rows, col0:col0+cols].
    """
    half = side / 2
    col0, col1 = max(int(np.floor(cx - half)), 0), min(int(np.ceil(cx + half)), size)
    row0, row1 = max(int(np.floor(cy - half)), 0), min(int(np.ceil(cy + half)), size)
    if shape == "square":  # exact: a pixel's overlap with the square is the product of its interval overlaps
        cols = _overlap(np.arange(col0, col1), cx - half, cx + half)
        rows = _overlap(np.arange(row0, row1), cy - half, cy + half)
        return row0, col0, rows[:, None] * cols[None, :]
    offsets = (np.arange(supersample) + 0.5) / supersample  # sub-pixel sample positions within a pixel
    xs = (np.arange(col0, col1)[:, None] + offsets).reshape(-1)  # (cols * ss,)
    ys = (np.arange(row0, row1)[:, None] + offsets).reshape(-1)  # (rows * ss,)
    inside = _inside(shape, xs[None, :] - cx, ys[:, None] - cy, half)  # (rows * ss, cols * ss)
    coverage = inside.reshape(row1 - row0, supersample, col1 - col0, supersample).mean(axis=(1, 3))
    return row0, col0, coverage


def render_clip(
    colour: str,
    shape: str,
    direction: str,
    num_frames: int = 16,
    size: int = 64,
    seed: int = 0,
    *,
    supersample: int = 4,
    return_info: bool = False,
):
    """Render one clip: uint8 frames (num_frames, size, size, 3).

    The object's size and start position are drawn from `np.random.default_rng(seed)`, so a seed always gives
    the same clip. With `return_info=True` returns (frames, info), where info is the ground truth (plain Python
    values, JSON-serialisable): colour, shape, direction, caption, rgb, frame `size`, `object_size` (bounding-box
    side in pixels), `centres` [[x, y], ...] per frame (bounding-box centre, pixel coordinates as in the module
    docstring), `bboxes` [[x0, y0, x1, y1], ...] per frame, and `velocity` [dx, dy] in pixels per frame.
    """
    # 1. Check inputs
    _check_combo(colour, shape, direction)
    if num_frames < 1:
        raise VidiffInputError(f"num_frames must be >= 1, got {num_frames}")
    if size < 8:
        raise VidiffInputError(f"size must be >= 8 pixels, got {size}")
    if supersample < 1:
        raise VidiffInputError(f"supersample must be >= 1, got {supersample}")

    # 2. Draw the object size and its path, so that the whole path is inside the frame
    rng = np.random.default_rng(seed)
    side = rng.uniform(*SIZE_RANGE) * size
    travel = TRAVEL * size
    half = side / 2
    margin = min(1.0, (size - side - travel) / 2)  # a black border pixel when there is room for one
    low = rng.uniform(half + margin, size - half - margin - travel)  # lower end of the path on the motion axis
    across = rng.uniform(half + margin, size - half - margin)  # fixed coordinate on the other axis
    ux, uy = DIRECTION_VECTORS[direction]
    step = travel / max(num_frames - 1, 1)
    along = low + (travel if ux + uy < 0 else 0.0)  # left / up start from the high end
    start = (along, across) if ux else (across, along)
    centres = [(start[0] + ux * step * t, start[1] + uy * step * t) for t in range(num_frames)]

    # 3. Rasterise each frame: coverage on a sub-pixel grid, colour blended over black
    rgb = np.array(COLOURS[colour], dtype=np.float64)
    frames = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    for t, (cx, cy) in enumerate(centres):
        row0, col0, coverage = _coverage(shape, cx, cy, side, size, supersample)
        rows, cols = coverage.shape
        frames[t, row0 : row0 + rows, col0 : col0 + cols] = np.rint(coverage[..., None] * rgb).astype(np.uint8)

    if not return_info:
        return frames
    info = {
        "colour": colour,
        "shape": shape,
        "direction": direction,
        "caption": caption(colour, shape, direction),
        "rgb": list(COLOURS[colour]),
        "size": size,
        "num_frames": num_frames,
        "seed": seed,
        "object_size": float(side),
        "centres": [[float(x), float(y)] for x, y in centres],
        "bboxes": [[float(x - half), float(y - half), float(x + half), float(y + half)] for x, y in centres],
        "velocity": [float(ux * step), float(uy * step)],
    }
    return frames, info


# ---------------------------------------------------------------------------------------------------------------
# Dataset and folder writer
# ---------------------------------------------------------------------------------------------------------------


def clip_seed(seed: int, index: int) -> int:
    """The render seed of clip `index` of a dataset seeded with `seed` (independent streams per clip)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class ShapesDataset:
    """`num_clips` shapes-world clips of one split, cycling through its combinations in a fixed order.

    Item i is combination `combinations(split)[i % n]` rendered with `clip_seed(seed, i)`, so it depends only on
    (seed, i). Items are dicts: video (uint8 (f, h, w, 3)), caption, colour, shape, direction. Shuffling and
    conversion to tensors are left to the caller.
    """

    def __init__(self, num_clips: int, num_frames: int = 16, size: int = 64, split: str = "train", seed: int = 0):
        if num_clips < 1:
            raise VidiffInputError(f"num_clips must be >= 1, got {num_clips}")
        self.combos = combinations(split)
        self.num_clips, self.num_frames, self.size, self.split, self.seed = num_clips, num_frames, size, split, seed

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> dict:
        if not -self.num_clips <= index < self.num_clips:
            raise IndexError(f"index {index} out of range for {self.num_clips} clips")
        index %= self.num_clips
        colour, shape, direction = self.combos[index % len(self.combos)]
        video = render_clip(colour, shape, direction, self.num_frames, self.size, seed=clip_seed(self.seed, index))
        return {
            "video": video,
            "caption": caption(colour, shape, direction),
            "colour": colour,
            "shape": shape,
            "direction": direction,
        }


def write_shapes_folder(
    out_dir: str | Path,
    num_clips: int,
    num_frames: int = 16,
    size: int = 64,
    split: str = "train",
    seed: int = 0,
    fps: int = 8,
    ext: str = ".mp4",
    writer: Callable | None = None,
) -> list[Path]:
    """Write `num_clips` clips of `ShapesDataset(...)` as `clip_00000{ext}` ... plus a caption sidecar each.

    The sidecar `clip_00000.txt` holds the caption and a newline. `writer(frames, path, fps=fps)` writes one clip;
    it defaults to `vidiff.io.video.write_video`. Returns the video paths.
    """
    if writer is None:
        from vidiff.io.video import write_video as writer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = ShapesDataset(num_clips, num_frames=num_frames, size=size, split=split, seed=seed)
    paths = []
    for index in range(len(dataset)):
        item = dataset[index]
        path = out_dir / f"clip_{index:05d}{ext}"
        writer(item["video"], path, fps=fps)
        path.with_suffix(".txt").write_text(item["caption"] + "\n")
        paths.append(path)
    return paths
