"""A folder of the user's own videos as a training set of fixed-length, square clips.

`VideoFolderDataset(root)` finds every video under `root` (any depth), checks each one once when it is built, and
returns clips as `{"video": float32 (c, f, h, w) in [-1, 1], "caption": str, "path": str}`.

- Checking: every file is opened, its frame count and fps read, and its first and last frame decoded. A file
  that fails (empty, truncated, not a video, unknown codec) is skipped: recorded in `dataset.skipped`, logged
  once as a warning, and never opened again. `summary()` counts them.
- Clips: `num_frames` frames `stride` source frames apart (`frame_stride`, or `round(fps / target_fps)` per video
  when `target_fps` is set). Training draws the start at random, from `key`'s seed, so that a key always gives
  the same clip; validation (`train=False`) takes the clip in the middle of the video, which is more typical of
  a clip than its first frames (fade-ins, titles). Frames are resized so that the shorter side is `resolution`,
  then centre-cropped (or randomly cropped in training with `random_crop=True`) to `resolution x resolution`.
- Captions: a sidecar `NAME.txt` beside `NAME.mp4`, else the `text` of the clip's row in `root/metadata.jsonl`
  or `root/metadata.csv` (the Hugging Face folder-dataset layout: `file_name` relative to `root`; the jsonl row
  wins where both list a file), else "".
- Decoding: `vidiff.io.video`. The check is `probe_video(path, check=True)`, which also picks the decoder that
  returns the right frames for the file (decord or PyAV); clips are read with `read_frames` and that decoder.

A file that passed the check but fails to decode later is skipped then (logged once), and the clip of the next
usable video is returned in its place. In a `DataLoader` with workers each worker holds its own copy of the
dataset, so such a file is logged once per worker.
"""

from __future__ import annotations

import csv
import json
import logging
import operator
import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from vidiff.errors import VidiffInputError
from vidiff.io.video import VIDEO_EXTENSIONS, VideoReadError, probe_video, read_frames

logger = logging.getLogger(__name__)

SHORT_VIDEO_POLICIES = ("stride", "skip")
METADATA_FILES = ("metadata.csv", "metadata.jsonl")  # read in this order, so jsonl rows win


# ----------------------------------------------------------------------------------------------------------------
# Files and captions
# ----------------------------------------------------------------------------------------------------------------

def _find_videos(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not files:
        raise VidiffInputError(f"no video files in {root} (looked for {', '.join(VIDEO_EXTENSIONS)}, in any subfolder)")
    return files


def _read_captions(root: Path, files: list[Path]) -> dict[Path, str]:
    """Each file's caption: its `NAME.txt` sidecar, else its metadata row, else ""."""
    listed = _metadata_captions(root)
    names = {path: path.relative_to(root).as_posix() for path in files}
    unmatched = sorted(set(listed) - set(names.values()))
    if unmatched:
        logger.warning("%d captions in %s name no video file (first: %s)", len(unmatched), root, unmatched[0])
    captions = {}
    for path in files:
        sidecar = path.with_suffix(".txt")
        if sidecar.is_file():
            captions[path] = sidecar.read_text(encoding="utf-8").strip()
        else:
            captions[path] = listed.get(names[path], "")
    return captions


def _metadata_captions(root: Path) -> dict[str, str]:
    """`{file_name (relative to root, posix): text}` from `root/metadata.csv` and `root/metadata.jsonl`."""
    captions = {}
    for name in METADATA_FILES:
        path = root / name
        if not path.is_file():
            continue
        for number, row in enumerate(_metadata_rows(path), start=1):
            if not isinstance(row, dict) or "file_name" not in row or "text" not in row:
                got = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise VidiffInputError(f"{path} row {number} needs 'file_name' and 'text' columns, got {got}")
            file_name = posixpath.normpath(str(row["file_name"]).replace("\\", "/"))
            captions[file_name] = str(row["text"] or "").strip()
    return captions


def _metadata_rows(path: Path) -> list:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as file:
            return list(csv.DictReader(file))
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise VidiffInputError(f"{path} line {number} is not JSON ({err})") from err
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Frames to a clip tensor
# ----------------------------------------------------------------------------------------------------------------

def _resize_crop(frames: np.ndarray, size: int, rng: np.random.Generator | None) -> torch.Tensor:
    """uint8 `(f, h, w, 3)` -> float32 `(3, f, size, size)` in [-1, 1]: the shorter side resized to `size`,
    then a centre crop, or a random one drawn from `rng`."""
    x = rearrange(torch.from_numpy(frames), "f h w c -> f c h w").float()
    height, width = x.shape[-2:]
    scale = size / min(height, width)
    out_h, out_w = max(size, round(height * scale)), max(size, round(width * scale))
    x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    if rng is None:
        top, left = (out_h - size) // 2, (out_w - size) // 2
    else:
        top, left = int(rng.integers(0, out_h - size + 1)), int(rng.integers(0, out_w - size + 1))
    x = x[:, :, top:top + size, left:left + size]  # (f, c, size, size)
    return rearrange((x / 127.5 - 1).clamp(-1, 1), "f c h w -> c f h w").contiguous()


# ----------------------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class _Video:
    path: Path
    frames: int
    stride: int
    strided: bool  # too short for the asked stride, so read at a smaller one
    caption: str
    backend: str  # "decord" or "pyav"


class VideoFolderDataset(torch.utils.data.Dataset):
    """Clips from every readable video under `root`; see the module docstring.

    `dataset[index]` or `dataset[(index, item_seed)]` -> `{"video": float32 (3, num_frames, resolution,
    resolution) in [-1, 1], "caption": str, "path": str}`. In training the clip start (and the crop, with
    `random_crop`) come from `np.random.default_rng(item_seed)`, or `default_rng((seed, index))` without an
    item seed: a key always gives the same clip, so pass a fresh `item_seed` per epoch for new clips.
    An index valid when the dataset was built stays valid after videos fail at read time (it wraps around the
    videos left), so that a sampler built earlier keeps working.
    """

    def __init__(self, root, num_frames: int = 16, resolution: int = 256, frame_stride: int = 1,
                 target_fps: float | None = None, random_crop: bool = False, short_videos: str = "stride",
                 train: bool = True, seed: int = 0):
        # 1. Check inputs
        for name, value in (("num_frames", num_frames), ("resolution", resolution), ("frame_stride", frame_stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VidiffInputError(f"{name} must be a positive int, got {value!r}")
        if target_fps is not None and not (isinstance(target_fps, (int, float)) and 0 < target_fps < float("inf")):
            raise VidiffInputError(f"target_fps must be a positive number or None, got {target_fps!r}")
        if short_videos not in SHORT_VIDEO_POLICIES:
            raise VidiffInputError(f"short_videos must be one of {SHORT_VIDEO_POLICIES}, got {short_videos!r}")
        self.root = Path(root)
        self.num_frames, self.resolution, self.frame_stride = num_frames, resolution, frame_stride
        self.target_fps, self.random_crop, self.short_videos = target_fps, random_crop, short_videos
        self.train, self.seed = train, seed

        # 2. Find the files and read their captions
        files = _find_videos(self.root)
        captions = _read_captions(self.root, files)

        # 3. Check every file once; keep the usable ones
        self.skipped: list[dict] = []
        self.videos: list[_Video] = []
        for path in files:
            video = self._scan(path, captions[path])
            if video is not None:
                self.videos.append(video)
        if not self.videos:
            raise self._none_left()
        self._num_indices = len(self.videos)

    def _scan(self, path: Path, caption: str) -> _Video | None:
        """The file as a `_Video` with its stride, or None (and a `skipped` entry) if it cannot give a clip."""
        try:
            info = probe_video(path, check=True)  # opens it, counts its frames, decodes the first and the last
        except VideoReadError as err:
            return self._skip(path, err.reason)
        frames, fps, backend = info["frames"], info["fps"], info["backend"]
        stride = self.frame_stride
        if self.target_fps is not None:
            if fps is None:
                return self._skip(path, "no frame rate stored, so target_fps cannot apply")
            stride = max(1, round(fps / self.target_fps))
        span = (self.num_frames - 1) * stride + 1
        if frames >= span:
            return _Video(path, frames, stride, False, caption, backend)
        if self.short_videos == "skip" or frames < self.num_frames:
            return self._skip(path, f"shorter than one clip: {frames} frames < {span}")
        stride = (frames - 1) // (self.num_frames - 1)  # the largest stride that fits; >= 1 here
        return _Video(path, frames, stride, True, caption, backend)

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append({"path": str(path), "reason": reason})
        logger.warning("skipping video %s: %s", path, reason)
        return None

    def _none_left(self) -> VidiffInputError:
        first = f" (first: {self.skipped[0]['path']}: {self.skipped[0]['reason']})" if self.skipped else ""
        return VidiffInputError(f"no readable videos in {self.root}: {len(self.skipped)} files skipped{first}")

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key) -> dict:
        """`key`: an int index or `(index, item_seed)`. Returns `{"video": (c, f, h, w), "caption", "path"}`."""
        if isinstance(key, tuple) and len(key) != 2:
            raise TypeError(f"key must be an index or (index, item_seed), got {key!r}")
        index, item_seed = key if isinstance(key, tuple) else (key, None)
        index = operator.index(index)
        if not 0 <= index < self._num_indices:
            raise IndexError(f"index {index} out of range for {self._num_indices} videos")
        while self.videos:
            position = index % len(self.videos)
            video = self.videos[position]
            rng = np.random.default_rng((self.seed, index) if item_seed is None else item_seed)
            try:
                return self._clip(video, rng)
            except VideoReadError as err:
                self._skip(video.path, f"failed to decode after the scan: {err.reason}")
                del self.videos[position]  # the next usable video now sits at `position`
        raise self._none_left()

    def _clip(self, video: _Video, rng: np.random.Generator) -> dict:
        span = (self.num_frames - 1) * video.stride + 1
        start = int(rng.integers(0, video.frames - span + 1)) if self.train else (video.frames - span) // 2
        frames = read_frames(video.path, list(range(start, start + span, video.stride)), video.backend)
        clip = _resize_crop(frames, self.resolution, rng if self.train and self.random_crop else None)
        return {"video": clip, "caption": video.caption, "path": str(video.path)}

    def summary(self) -> dict:
        """Counts for a run log: usable videos, skipped files (with their reasons), videos read at a smaller stride."""
        return {
            "videos": len(self.videos),
            "skipped": len(self.skipped),
            "short_strided": sum(video.strided for video in self.videos),
            "skipped_files": [dict(entry) for entry in self.skipped],
        }
