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
- Decoding: decord (random access through its frame index) where it imports; PyAV for GIFs and AVIs (decord 0.6
  cannot read GIFs, and returns wrong frames when it seeks in an AVI with B-frames), where decord is missing, and
  for files decord fails on (decord 0.6 cannot copy out frames of some widths, such as 24 or 48).

A file that passed the check but fails to decode later is skipped then (logged once), and the clip of the next
usable video is returned in its place. In a `DataLoader` with workers each worker holds its own copy of the
dataset, so such a file is logged once per worker.
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import operator
import os
import posixpath
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif")
SHORT_VIDEO_POLICIES = ("stride", "skip")
METADATA_FILES = ("metadata.csv", "metadata.jsonl")  # read in this order, so jsonl rows win
# decord cannot read GIFs, and in AVIs with B-frames (H.264) its random access returns the wrong frames
PYAV_ONLY = (".gif", ".avi")


class _DecodeError(Exception):
    """A file that cannot be decoded; the message is the short reason that goes into `skipped`."""


# ----------------------------------------------------------------------------------------------------------------
# Decoding: (frame count, fps) and frames by index, with decord or PyAV
# ----------------------------------------------------------------------------------------------------------------

def _probe(path: Path) -> tuple[int, float, str]:
    """`(frames, fps, backend)` for a file whose first and last frames decode; `_DecodeError` otherwise."""
    if path.stat().st_size == 0:
        raise _DecodeError("empty file (0 bytes)")
    decord = None if path.suffix.lower() in PYAV_ONLY else _import_decord()
    if decord is not None:
        try:
            return (*_probe_decord(decord, path), "decord")
        except _DecodeError as err:
            logger.debug("decord cannot read %s (%s); trying PyAV", path, err)
    return (*_probe_pyav(path), "pyav")


def _read_frames(path: Path, indices: list[int], backend: str) -> np.ndarray:
    """The frames at `indices` as uint8 `(len(indices), h, w, 3)`; `_DecodeError` if any is missing."""
    decord = _import_decord() if backend == "decord" else None
    frames = _read_decord(decord, path, indices) if decord is not None else _read_pyav(path, indices)
    if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
        raise _DecodeError(f"decoded frames of shape {frames.shape}, expected ({len(indices)}, h, w, 3)")
    return frames


def _import_decord():
    """The decord module, or None where it is not installed (it ships x86-64 wheels only)."""
    try:
        return importlib.import_module("decord")
    except ImportError:
        return None


def _probe_decord(decord, path: Path) -> tuple[int, float]:
    def first_and_last(reader) -> tuple[int, float]:
        if len(reader) == 0:
            raise _DecodeError("no video frames")
        _as_numpy(reader.get_batch(sorted({0, len(reader) - 1})))
        return len(reader), float(reader.get_avg_fps())

    return _decord_call(decord, path, first_and_last)


def _read_decord(decord, path: Path, indices: list[int]) -> np.ndarray:
    return _decord_call(decord, path, lambda reader: _as_numpy(reader.get_batch(indices)))


def _as_numpy(batch) -> np.ndarray:
    return batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)  # a torch bridge gives tensors


def _decord_call(decord, path: Path, fn):
    """`fn(reader)` on a fresh `decord.VideoReader`; decord's errors become `_DecodeError`s."""
    try:
        return fn(decord.VideoReader(str(path), ctx=decord.cpu(0)))
    except (decord.DECORDError, RuntimeError) as err:
        lines = str(err).strip().splitlines()
        raise _DecodeError(f"decord: {lines[0] if lines else type(err).__name__}") from err


@contextmanager
def _open_pyav(path: Path):
    """`(container, video stream)`; PyAV and OS errors inside the block become `_DecodeError`s."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _DecodeError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            yield container, stream
    except (av.FFmpegError, OSError) as err:
        raise _DecodeError(getattr(err, "strerror", None) or str(err)) from err


def _packets(container, stream):
    """The stream's non-empty packets, in decode order."""
    return (packet for packet in container.demux(stream) if packet.size)


def _probe_pyav(path: Path) -> tuple[int, float]:
    with _open_pyav(path) as (container, stream):
        count = sum(1 for _ in _packets(container, stream))
        listed, rate = stream.frames, stream.guessed_rate or stream.average_rate
    if count == 0:
        raise _DecodeError("no video frames")
    if listed and count < listed:
        raise _DecodeError(f"truncated: the header lists {listed} frames, the file holds {count}")
    if path.suffix.lower() == ".gif" and not _gif_complete(path):
        raise _DecodeError("truncated GIF (no trailer byte)")
    _read_pyav(path, [0])
    _read_pyav(path, [count - 1])  # seeks, so decodes the last GOP only
    return count, float(rate) if rate else float("nan")


def _read_pyav(path: Path, indices: list[int]) -> np.ndarray:
    """The frames at `indices`, decoded from the keyframe at or before the first of them."""
    last, wanted, decoded = max(indices), set(indices), {}
    with _open_pyav(path) as (container, stream):
        for index, frame in _numbered_frames(container, stream, min(indices), by_pts=path.suffix.lower() != ".avi"):
            if index in wanted:
                decoded[index] = frame.to_ndarray(format="rgb24")
            if index is not None and index >= last:
                break
    missing = sorted(wanted - set(decoded))
    if missing:
        raise _DecodeError(f"frame {missing[0]} did not decode")
    if len({frame.shape for frame in decoded.values()}) > 1:
        raise _DecodeError("the frame size changes within the video")
    return np.stack([decoded[index] for index in indices])


def _numbered_frames(container, stream, first: int, by_pts: bool):
    """`(frame index or None, frame)` in presentation order, from at or before frame `first`.

    The index is the frame's timestamp's rank among the packets' timestamps; decoding starts at the last keyframe
    shown no later than frame `first` (seeking to its decode time, in case the container seeks by those). Without
    `by_pts` (AVI: it stores decode times, which are wrong where there are B-frames) frames are counted from the
    first one instead: always right, but slow deep into long files.
    """
    if not by_pts:
        yield from enumerate(container.decode(stream))
        return
    pts, keyframes = [], []  # keyframes: (pts, the earlier of pts and dts)
    for packet in _packets(container, stream):
        if packet.pts is not None:
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append((packet.pts, min(packet.pts, packet.pts if packet.dts is None else packet.dts)))
    pts.sort()
    rank = {timestamp: index for index, timestamp in enumerate(pts)}
    container.seek(max((ts for key, ts in keyframes if key <= pts[first]), default=pts[0]), stream=stream)
    for frame in container.decode(stream):
        yield rank.get(frame.pts), frame


def _gif_complete(path: Path) -> bool:
    """A GIF ends with the trailer byte 0x3B; PyAV decodes a cut-off GIF without complaint."""
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\x3b"


# ----------------------------------------------------------------------------------------------------------------
# Files and captions
# ----------------------------------------------------------------------------------------------------------------

def _find_videos(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"no video files in {root} (looked for {', '.join(VIDEO_EXTENSIONS)}, in any subfolder)")
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
                raise ValueError(f"{path} row {number} needs 'file_name' and 'text' columns, got {got}")
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
            raise ValueError(f"{path} line {number} is not JSON ({err})") from err
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
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if target_fps is not None and not (isinstance(target_fps, (int, float)) and 0 < target_fps < float("inf")):
            raise ValueError(f"target_fps must be a positive number or None, got {target_fps!r}")
        if short_videos not in SHORT_VIDEO_POLICIES:
            raise ValueError(f"short_videos must be one of {SHORT_VIDEO_POLICIES}, got {short_videos!r}")
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
            frames, fps, backend = _probe(path)
        except _DecodeError as err:
            return self._skip(path, str(err))
        stride = self.frame_stride
        if self.target_fps is not None:
            if not fps > 0:
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

    def _none_left(self) -> ValueError:
        first = f" (first: {self.skipped[0]['path']}: {self.skipped[0]['reason']})" if self.skipped else ""
        return ValueError(f"no readable videos in {self.root}: {len(self.skipped)} files skipped{first}")

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
            except _DecodeError as err:
                self._skip(video.path, f"failed to decode after the scan: {err}")
                del self.videos[position]  # the next usable video now sits at `position`
        raise self._none_left()

    def _clip(self, video: _Video, rng: np.random.Generator) -> dict:
        span = (self.num_frames - 1) * video.stride + 1
        start = int(rng.integers(0, video.frames - span + 1)) if self.train else (video.frames - span) // 2
        frames = _read_frames(video.path, list(range(start, start + span, video.stride)), video.backend)
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
