"""The pixel judge for the shapes world: what a clip shows, read from its pixels with no learned model.

For each frame the judge finds the objects on the black background (max channel above a threshold, 8-connected
components, specks dropped), then reads the largest one: its colour (mean RGB of its interior, nearest named
colour), its shape (fill ratio and vertical asymmetry, nearest prototype) and its centroid. The clip's colour and
shape are majority votes over frames; its direction comes from a straight-line fit to the centroid path.
Given the clip's caption, it also says whether each attribute matches. `summarize` turns many judged clips into
accuracies for seen and held-out combinations, and `to_markdown` into a table.

Coordinates follow vidiff.data.shapes: x right, y down, pixel (row i, column j) centred at (j + 0.5, i + 0.5).
Every value in a result is a plain Python value, so results serialise to JSON as they are.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from vidiff.data.shapes import COLOURS, HELD_OUT, parse_caption
from vidiff.io.video import check_frames

THRESHOLD = 60  # a pixel is foreground when its max channel exceeds this (the dimmest named colour peaks at 210)
MIN_AREA_FRACTION = 0.005  # components smaller than this fraction of the frame (and than 3 pixels) are specks
MIN_MOTION = 0.1  # net displacement below this many frame sides reads as direction "none" (the world moves 0.5)

# Shape prototypes in (fill ratio, asymmetry). Fill ratio: soft area over soft bounding box, 1 for a square,
# pi/4 for a circle, 1/2 for a triangle. Fill alone separates the triangle from the circle by only 0.29, and in
# small frames (objects of 4-6 pixels) an anti-aliased triangle's soft bounding box shrinks so much that its fill
# reaches 0.89. The asymmetry is the negated skewness of the object's mass along y: 0 for the symmetric circle
# and square, +2*sqrt(2)/5 = 0.566 for an upright triangle, whose width (hence mass) grows linearly from the
# apex down. It needs no bounding box, so it survives anti-aliasing and small frames; both features are compared
# in their own units, so for triangle-or-not it outweighs the fill ratio, which decides circle against square.
SHAPE_PROTOTYPES = {"square": (1.0, 0.0), "circle": (math.pi / 4, 0.0), "triangle": (0.5, 2 * math.sqrt(2) / 5)}

_COLOUR_NAMES = list(COLOURS)
_COLOUR_RGB = np.array([COLOURS[name] for name in _COLOUR_NAMES], dtype=np.float64)  # (7, 3)


# ---------------------------------------------------------------------------------------------------------------
# Connected components
# ---------------------------------------------------------------------------------------------------------------


def _label_numpy(mask: np.ndarray) -> np.ndarray:
    """8-connected components of each frame of a (f, h, w) mask: int labels, 0 for background.

    Every pixel starts with its own flat index as label; labels then shrink to the smallest index in the
    component by repeated 3x3 minimum filters and pointer jumping (a label is the index of a pixel of the same
    component, whose own label is never larger). Components never join across frames.
    """
    f, h, w = mask.shape
    background = mask.size
    labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), background)
    while True:
        padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)), constant_values=background)
        smallest = labels
        for dy in range(3):
            for dx in range(3):
                smallest = np.minimum(smallest, padded[:, dy : dy + h, dx : dx + w])
        smallest = np.where(mask, smallest, background)
        flat = np.append(smallest.reshape(-1), background)  # so that labels[background] is background
        while True:  # pointer jumping
            jumped = flat[flat]
            if np.array_equal(jumped, flat):
                break
            flat = jumped
        smallest = flat[:-1].reshape(mask.shape)
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    _, consecutive = np.unique(labels, return_inverse=True)  # background is the largest value, so it sorts last
    consecutive = consecutive.reshape(mask.shape) + 1
    return np.where(mask, consecutive, 0)


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of each frame of a (f, h, w) bool mask; labels are unique across frames, 0 is
    background. Uses scipy.ndimage when it is installed (it is not a dependency), else a numpy labelling."""
    try:
        from scipy import ndimage
    except ImportError:
        return _label_numpy(mask)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within a frame, never across frames
    return ndimage.label(mask, structure=structure)[0]


# ---------------------------------------------------------------------------------------------------------------
# One object in one frame
# ---------------------------------------------------------------------------------------------------------------


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 4 neighbours are all in the mask (the object's interior, away from anti-aliased edges)."""
    p = np.pad(mask, 1)
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def nearest_colour(rgb) -> str:
    """The named colour nearest to an RGB triple (Euclidean distance in RGB)."""
    distances = np.linalg.norm(_COLOUR_RGB - np.asarray(rgb, dtype=np.float64), axis=1)
    return _COLOUR_NAMES[int(np.argmin(distances))]


def classify_shape(fill: float, asymmetry: float) -> str:
    """The shape whose (fill ratio, asymmetry) prototype is nearest; see SHAPE_PROTOTYPES."""
    prototypes = SHAPE_PROTOTYPES.items()
    return min(prototypes, key=lambda item: math.hypot(fill - item[1][0], asymmetry - item[1][1]))[0]


def _read_object(frame: np.ndarray, labels: np.ndarray, label: int) -> dict:
    """Colour, shape features, centroid and area of component `label` of one frame (h, w, 3)."""
    # 1. A window one pixel larger than the component, to catch its faint anti-aliased rim
    component = labels == label
    rows, cols = np.nonzero(component)
    r0, r1 = max(rows.min() - 1, 0), min(rows.max() + 2, frame.shape[0])
    c0, c1 = max(cols.min() - 1, 0), min(cols.max() + 2, frame.shape[1])
    window = frame[r0:r1, c0:c1].astype(np.float64)  # (hh, ww, 3)
    inside = component[r0:r1, c0:c1]
    others = labels[r0:r1, c0:c1] != 0  # pixels of this or another component (excluded from the rim)

    # 2. Colour from the interior, where the object covers the whole pixel
    interior = _erode(inside)
    if not interior.any():  # too small to have an interior
        interior = inside
    peak = window.max(axis=-1)  # (hh, ww)
    mean_rgb = window[interior].mean(axis=0)

    # 3. Soft coverage: the rim's brightness relative to the interior's (a high percentile rather than the median,
    #    since in small frames the "interior" may still hold partly covered pixels)
    alpha = np.clip(peak / np.percentile(peak[interior], 90), 0.0, 1.0)
    alpha = np.where(inside | ~others, alpha, 0.0)
    area = alpha.sum()
    width, height = alpha.max(axis=0).sum(), alpha.max(axis=1).sum()
    ys = np.arange(r0, r1) + 0.5
    xs = np.arange(c0, c1) + 0.5
    row_mass, col_mass = alpha.sum(axis=1), alpha.sum(axis=0)
    cy, cx = row_mass @ ys / area, col_mass @ xs / area
    var_y = row_mass @ (ys - cy) ** 2 / area
    skew_y = row_mass @ (ys - cy) ** 3 / area / max(var_y, 1e-12) ** 1.5
    fill, asymmetry = area / (width * height), -skew_y
    return {
        "centroid": [float(cx), float(cy)],
        "area": float(area),
        "mean_rgb": [float(v) for v in mean_rgb],
        "colour": nearest_colour(mean_rgb),
        "fill": float(fill),
        "asymmetry": float(asymmetry),
        "shape": classify_shape(fill, asymmetry),
    }


# ---------------------------------------------------------------------------------------------------------------
# A clip
# ---------------------------------------------------------------------------------------------------------------


def _majority(votes: list) -> tuple:
    """(most common non-None vote, fraction of non-None votes agreeing with it); (None, 0.0) if none."""
    votes = [v for v in votes if v is not None]
    if not votes:
        return None, 0.0
    winner, count = Counter(votes).most_common(1)[0]
    return winner, count / len(votes)


def _direction(centroids: list, width: int, height: int, min_motion: float) -> tuple:
    """(direction, [dx, dy] in frame sides, confidence) from a least-squares line through the centroid path."""
    times = [t for t, c in enumerate(centroids) if c is not None]
    if len(times) < 2:
        return "none", [0.0, 0.0], 0.0
    t = np.array(times, dtype=np.float64)
    path = np.array([centroids[i] for i in times])  # (n, 2) x, y
    velocity = np.polyfit(t, path, 1)[0]  # (2,) pixels per frame
    dx, dy = velocity * (len(centroids) - 1) / np.array([width, height])
    dx, dy = float(dx), float(dy)
    if math.hypot(dx, dy) < min_motion:
        return "none", [dx, dy], 0.0
    if abs(dx) >= abs(dy):
        direction = "right" if dx > 0 else "left"
    else:
        direction = "down" if dy > 0 else "up"  # image y grows downward
    return direction, [dx, dy], max(abs(dx), abs(dy)) / (abs(dx) + abs(dy))


def judge_clip(
    frames: np.ndarray,
    caption: str | None = None,
    *,
    threshold: int = THRESHOLD,
    min_area_fraction: float = MIN_AREA_FRACTION,
    min_motion: float = MIN_MOTION,
) -> dict:
    """Judge one clip, uint8 frames (f, h, w, 3), from its pixels.

    Returns a dict (plain Python values):
      num_frames, height, width;
      object_count (per frame), single_object_fraction (frames with exactly one object);
      per frame, of the largest object (None / 0 where there is none): centroids [x, y], areas (soft, pixels),
        frame_colours, frame_shapes, fills, asymmetries;
      colour, colour_agreement, shape, shape_agreement: majority votes over frames with an object, and the
        fraction of those frames that agree (None, 0.0 if no frame has one); mean_rgb of the object interior;
      direction ("left", "right", "up", "down" or "none" when the net motion is below `min_motion` frame
        sides), displacement [dx, dy] over the clip in frame sides, direction_confidence (|major axis| /
        (|dx| + |dy|), 1 for motion along an axis, 0 for "none");
      flicker: mean absolute difference of consecutive frames in [0, 1]; area_flicker: mean absolute change of
        the object's area between consecutive frames, relative to its mean area.
    With a caption (which must parse with parse_caption) also: caption, expected {colour, shape, direction},
    colour_ok, shape_ok, direction_ok, all_ok (all three), single_ok (single_object_fraction >= 0.95).
    """
    # 1. Check inputs
    frames = np.asarray(frames)
    check_frames(frames)
    expected = parse_caption(caption) if caption is not None else None
    num_frames, height, width, _ = frames.shape

    # 2. Foreground components per frame, specks dropped, and the largest object of each frame read
    objects, object_count = _largest_objects(frames, threshold, min_area_fraction)

    def per_frame(key, missing=None):
        return [o[key] if o is not None else missing for o in objects]

    # 3. Clip-level colour, shape and direction
    colour, colour_agreement = _majority(per_frame("colour"))
    shape, shape_agreement = _majority(per_frame("shape"))
    rgbs = [o["mean_rgb"] for o in objects if o is not None]
    centroids = per_frame("centroid")
    direction, displacement, confidence = _direction(centroids, width, height, min_motion)

    # 4. Flicker
    object_areas = np.array(per_frame("area", 0.0))
    flicker, area_flicker = _flicker(frames, object_areas)

    # 5. The result, and with a caption how it compares
    result = {
        "num_frames": int(num_frames),
        "height": int(height),
        "width": int(width),
        "object_count": [int(n) for n in object_count],
        "single_object_fraction": float(np.mean(object_count == 1)),
        "centroids": centroids,
        "areas": [float(a) for a in object_areas],
        "frame_colours": per_frame("colour"),
        "frame_shapes": per_frame("shape"),
        "fills": per_frame("fill"),
        "asymmetries": per_frame("asymmetry"),
        "colour": colour,
        "colour_agreement": float(colour_agreement),
        "mean_rgb": [float(v) for v in np.mean(rgbs, axis=0)] if rgbs else None,
        "shape": shape,
        "shape_agreement": float(shape_agreement),
        "direction": direction,
        "displacement": displacement,
        "direction_confidence": float(confidence),
        "flicker": flicker,
        "area_flicker": area_flicker,
    }
    if expected is not None:
        result.update(_compare(result, caption, expected))
    return result


def _largest_objects(frames: np.ndarray, threshold: int, min_area_fraction: float):
    """(per frame the largest object's reading or None, per frame the number of objects): foreground components
    above `threshold`, specks below `min_area_fraction` of the frame dropped."""
    num_frames, height, width, _ = frames.shape
    labels = label_components(frames.max(axis=-1) > threshold)  # (f, h, w)
    min_area = max(3, math.ceil(min_area_fraction * height * width))
    areas = np.bincount(labels.reshape(-1))
    areas[0] = 0
    frame_of = np.zeros(len(areas), dtype=np.int64)
    frame_of[labels.reshape(-1)] = np.repeat(np.arange(num_frames), height * width)
    kept = np.nonzero(areas >= min_area)[0]
    object_count = np.bincount(frame_of[kept], minlength=num_frames)
    labels = np.where(np.isin(labels, kept), labels, 0)  # specks become background
    objects = []
    for t in range(num_frames):
        in_frame = kept[frame_of[kept] == t]
        if len(in_frame) == 0:
            objects.append(None)
            continue
        largest = in_frame[np.argmax(areas[in_frame])]
        objects.append(_read_object(frames[t], labels[t], largest))
    return objects, object_count


def _flicker(frames: np.ndarray, object_areas: np.ndarray) -> tuple[float, float]:
    """(mean absolute change of consecutive frames in [0, 1], mean absolute change of the object's area relative to
    its mean area)."""
    num_frames = len(frames)
    flicker = float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() / 255) if num_frames > 1 else 0.0
    mean_area = object_areas.mean()
    area_flicker = float(np.abs(np.diff(object_areas)).mean() / mean_area) if num_frames > 1 and mean_area > 0 else 0.0
    return flicker, area_flicker


def _compare(result: dict, caption: str, expected: tuple[str, str, str]) -> dict:
    """What a clip's reading says of its caption: each of colour, shape and direction right, all three, one object."""
    colour_ok, shape_ok, direction_ok = (result[key] == value
                                        for key, value in zip(("colour", "shape", "direction"), expected))
    return {"caption": caption, "expected": dict(zip(("colour", "shape", "direction"), expected)),
            "colour_ok": colour_ok, "shape_ok": shape_ok, "direction_ok": direction_ok,
            "all_ok": colour_ok and shape_ok and direction_ok,
            "single_ok": result["single_object_fraction"] >= 0.95}


# ---------------------------------------------------------------------------------------------------------------
# Many clips
# ---------------------------------------------------------------------------------------------------------------

SUMMARY_METRICS = ("colour", "shape", "direction", "all", "single_object", "flicker")


def _group_summary(results: list[dict]) -> dict:
    if not results:
        return {"n": 0, **{metric: None for metric in SUMMARY_METRICS}}
    return {
        "n": len(results),
        "colour": float(np.mean([r["colour_ok"] for r in results])),
        "shape": float(np.mean([r["shape_ok"] for r in results])),
        "direction": float(np.mean([r["direction_ok"] for r in results])),
        "all": float(np.mean([r["all_ok"] for r in results])),
        "single_object": float(np.mean([r["single_object_fraction"] for r in results])),
        "flicker": float(np.mean([r["flicker"] for r in results])),
    }


def summarize(results: list[dict], heldout: list[bool] | None = None) -> dict:
    """Accuracies over judged clips, for seen combinations, held-out ones and all together.

    Every result must come from `judge_clip(..., caption=...)`. `heldout[i]` says whether clip i's combination
    was held out of training; by default it is read from the caption (membership in HELD_OUT). Returns
    {"seen": g, "heldout": g, "all": g}, each g = {n, colour, shape, direction, all, single_object, flicker}:
    accuracies (fraction of clips), `all` needing all three right, `single_object` the mean
    single_object_fraction and `flicker` the mean flicker; None where the group is empty.
    """
    missing = [i for i, r in enumerate(results) if "colour_ok" not in r]
    if missing:
        raise ValueError(f"results {missing[:5]} were judged without a caption; pass caption= to judge_clip")
    if heldout is None:
        heldout = [tuple(r["expected"].values()) in HELD_OUT for r in results]
    if len(heldout) != len(results):
        raise ValueError(f"heldout has {len(heldout)} entries for {len(results)} results")
    return {
        "seen": _group_summary([r for r, h in zip(results, heldout) if not h]),
        "heldout": _group_summary([r for r, h in zip(results, heldout) if h]),
        "all": _group_summary(results),
    }


def to_markdown(summary: dict) -> str:
    """A markdown table of `summarize`'s output, one row per group, accuracies in percent."""
    header = "| combos | clips | colour | shape | direction | all three | single object | flicker |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for group, name in (("seen", "seen"), ("heldout", "held-out"), ("all", "all")):
        g = summary[group]
        percent = ["-" if g[m] is None else f"{100 * g[m]:.1f} %" for m in SUMMARY_METRICS[:5]]
        flicker = "-" if g["flicker"] is None else f"{g['flicker']:.4f}"
        lines.append(f"| {name} | {g['n']} | " + " | ".join(percent) + f" | {flicker} |")
    return "\n".join(lines) + "\n"
