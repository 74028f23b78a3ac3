"""Video files in and out. Frames are numpy `uint8` arrays shaped `(f, h, w, 3)`, RGB, at every boundary.

`write_video` picks the format from the path: `.mp4` (H.264, yuv420p, faststart), `.webm` (VP9, yuv420p), `.gif`
(palette built from the clip itself, loops forever) or, for a path without a suffix or ending in `/`, a folder of
`frame_0000.png ...` plus `metadata.json`. Everything is built beside its destination and renamed into place.

`read_video` decodes GIFs with PyAV; other containers with decord when it is installed (falling back to PyAV where
decord fails, e.g. decord 0.6 cannot copy out widths such as 24 or 72) and with PyAV otherwise. Every way a file can
fail to decode ends in a `VideoReadError` that names the path.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import av
import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np

from vidiff.atomic import atomic_dir, atomic_path, write_text

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_FPS = 8.0  # for frame folders without a metadata.json
BACKENDS = ("auto", "decord", "pyav")

# imageio_ffmpeg.write_frames settings per written format
_FFMPEG = {
    ".mp4": dict(codec="libx264", pix_fmt_out="yuv420p",
                 output_params=["-crf", "18", "-preset", "medium", "-movflags", "+faststart"]),
    ".webm": dict(codec="libvpx-vp9", pix_fmt_out="yuv420p",
                  output_params=["-crf", "32", "-b:v", "0", "-row-mt", "1"]),
    # a palette from the clip's own colours: clips with <= 255 colours come back exactly
    ".gif": dict(codec="gif", pix_fmt_out="pal8",
                 output_params=["-filter_complex", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-loop", "0"]),
}
_SUPPORTED = "use .mp4, .gif, .webm, or a path without a suffix (or ending in '/') for a folder of PNG frames"


class VideoReadError(ValueError):
    """A video (file or frame folder) that is missing, empty, not a video, truncated or undecodable."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"cannot read video {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where `write_video` puts the metadata of `path`: `clip.mp4` -> `clip.mp4.json`."""
    return Path(f"{os.fspath(path)}.json")


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------

def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float = 8, metadata: Mapping | None = None) -> Path:
    """Write `frames` (uint8, (f, h, w, 3)) to `path` atomically and return the path.

    The format follows the suffix (`.mp4`, `.gif`, `.webm`; none or a trailing `/` for a PNG folder). Frames are
    never resized or padded: H.264 yuv420p needs an even width and height, so odd sizes are refused for `.mp4`
    (GIF, WebM and PNG take any size). Grey `(f, h, w, 1)` frames are refused too; repeat the channel first.
    With `metadata`, `path + ".json"` is written as well, holding it plus `frames`, `fps`, `height`, `width` and
    `format`; a PNG folder always gets that record as `metadata.json` inside, so that its fps survives a round trip.
    On any error nothing changes at `path`, and no temporary file is left behind.
    """
    # 1. Check inputs, before anything touches the disk
    suffix = _output_suffix(path)
    _check_frames(frames, suffix)
    fps = _check_fps(fps)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    record = _sidecar_text(frames, fps, suffix, metadata)
    path = Path(path)

    # 2. A PNG folder: build it in a temporary folder, then swap it in
    if suffix == "":
        with atomic_dir(path, overwrite=True) as tmp:
            for index, frame in enumerate(frames):
                iio.imwrite(tmp / f"frame_{index:04d}.png", frame)
            (tmp / "metadata.json").write_text(record)
        return path

    # 3. A video file: encode beside the destination, check it, write the sidecar, then rename the clip into place
    with atomic_path(path) as tmp:
        _encode(frames, tmp, fps, suffix)
        _check_written(tmp, frames)
        if metadata is not None:
            write_text(sidecar_path(path), record)
    return path


def _output_suffix(path: str | os.PathLike) -> str:
    """The written format's suffix, or "" for a PNG folder; ValueError for anything else."""
    raw = os.fspath(path)
    suffix = Path(raw).suffix.lower()
    if raw.endswith(("/", os.sep)) or suffix == "":
        return ""
    if suffix not in _FFMPEG:
        raise ValueError(f"cannot write videos with extension {suffix!r} ({raw}); {_SUPPORTED}")
    return suffix


def _check_frames(frames: np.ndarray, suffix: str) -> None:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy uint8 array shaped (f, h, w, 3), got {type(frames).__name__}")
    got = f"got {frames.dtype} array of shape {frames.shape}"
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (0..255), {got}; convert with (x * 255).round().astype(np.uint8)")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be shaped (f, h, w, 3) RGB, {got}; repeat a grey channel to 3 first")
    if 0 in frames.shape:
        raise ValueError(f"frames must hold at least one frame of at least 1x1 pixels, {got}")
    height, width = frames.shape[1:3]
    if suffix == ".mp4" and (height % 2 or width % 2):
        raise ValueError(f"H.264 (.mp4) needs an even width and height, got {width}x{height}; "
                         "crop or resize to an even size, or write a .gif, .webm or PNG folder")


def _check_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not 0 < fps < math.inf:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return int(fps) if float(fps).is_integer() else float(fps)


def _sidecar_text(frames: np.ndarray, fps: float, suffix: str, metadata: Mapping | None) -> str:
    """The JSON record: the caller's metadata plus what the file really holds (which wins on a clash)."""
    f, h, w, _ = frames.shape
    record = {**(metadata or {}), "frames": f, "fps": fps, "height": h, "width": w, "format": suffix[1:] or "png"}
    return json.dumps(record, indent=2, default=str) + "\n"


def _encode(frames: np.ndarray, path: Path, fps: float, suffix: str) -> None:
    """Pipe the frames through ffmpeg; macro_block_size=1 keeps the true size (imageio-ffmpeg resizes otherwise)."""
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, quality=None, macro_block_size=1, ffmpeg_log_level="error",
        **_FFMPEG[suffix],
    )
    writer.send(None)  # start ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()  # waits for ffmpeg to finish the file


def _check_written(path: Path, frames: np.ndarray) -> None:
    """imageio-ffmpeg ignores ffmpeg's exit status, so read the header back and compare."""
    f, h, w, _ = frames.shape
    try:
        info = probe_video(path)
    except VideoReadError as err:
        raise RuntimeError(f"ffmpeg did not write a valid video ({err.reason}); its messages are on stderr") from err
    if (info["frames"], info["height"], info["width"]) != (f, h, w):
        raise RuntimeError(f"ffmpeg wrote {info['frames']} frames of {info['width']}x{info['height']}, "
                           f"expected {f} of {w}x{h}")


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------

def read_video(path: str | os.PathLike, max_frames: int | None = None,
               backend: str = "auto") -> tuple[np.ndarray, float]:
    """Decode a video file or a folder of PNG/JPG frames into `(frames uint8 (f, h, w, 3), fps)`.

    `max_frames` stops after that many frames (damage past them can then go unnoticed). `backend` is "auto"
    (decord when installed, PyAV where decord is missing or fails, PyAV always for GIF), "decord" or "pyav".
    A folder's fps comes from its `metadata.json`, else 8. Raises `VideoReadError` for a missing, empty,
    non-video, truncated or frameless input.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be a positive int or None, got {max_frames!r}")
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return _read_folder(path, max_frames)
    is_gif = path.suffix.lower() == ".gif"
    if backend == "decord" and is_gif:
        raise ValueError(f"decord cannot read GIFs ({path}); use backend='pyav' or 'auto'")
    decord = None if backend == "pyav" or is_gif else _import_decord()
    if backend == "decord" and decord is None:
        raise ValueError("backend='decord' needs the decord package; install it or use backend='pyav'")
    if decord is None:
        return _read_pyav(path, max_frames)
    try:
        return _read_decord(decord, path, max_frames)
    except VideoReadError as err:
        if backend == "decord":
            raise
        logger.debug("decord failed on %s (%s); decoding with PyAV", path, err.reason)
        return _read_pyav(path, max_frames)


def probe_video(path: str | os.PathLike) -> dict:
    """`{"frames", "fps", "height", "width"}` from the header, without decoding (frames are counted by demuxing
    where the container does not store the count)."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = _frame_files(path)
        height, width = _read_image(files[0]).shape[:2]
        return {"frames": len(files), "fps": _folder_fps(path), "height": height, "width": width}
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            return {"frames": frames, "fps": _stream_fps(stream), "height": stream.height, "width": stream.width}
    except av.FFmpegError as err:
        raise VideoReadError(path, f"not a readable video ({err})") from err


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoReadError(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoReadError(path, "the file is empty (0 bytes)")


def _import_decord():
    """The decord module, or None where it is not installed (it ships x86-64 wheels only)."""
    try:
        return importlib.import_module("decord")
    except ImportError:
        return None


def _read_decord(decord, path: Path, max_frames: int | None) -> tuple[np.ndarray, float]:
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        count = len(reader) if max_frames is None else min(len(reader), max_frames)
        if count == 0:
            raise VideoReadError(path, "it holds no frames")
        batch = reader.get_batch(list(range(count)))
        fps = float(reader.get_avg_fps())
    except (decord.DECORDError, RuntimeError) as err:
        raise VideoReadError(path, f"decord could not decode it ({_first_line(err)})") from err
    frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)  # a torch bridge returns tensors
    if frames.ndim != 4 or frames.shape[0] != count or frames.shape[-1] != 3:
        raise VideoReadError(path, f"decord returned frames of shape {frames.shape}")
    return frames, fps


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _read_pyav(path: Path, max_frames: int | None) -> tuple[np.ndarray, float]:
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == max_frames:
                    break
            fps, expected = _stream_fps(stream), stream.frames
    except av.FFmpegError as err:
        raise VideoReadError(path, f"not a readable video ({err})") from err
    if not frames:
        raise VideoReadError(path, "it holds no frames")
    if expected and len(frames) < min(expected, max_frames or expected):
        raise VideoReadError(path, f"truncated: decoded {len(frames)} of the {expected} frames its header lists")
    if path.suffix.lower() == ".gif" and not _gif_complete(path):
        raise VideoReadError(path, "truncated GIF (no trailer byte)")
    return np.stack(frames), fps


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise VideoReadError(path, "it has no video stream")
    return container.streams.video[0]


def _stream_fps(stream) -> float:
    rate = stream.guessed_rate or stream.average_rate or stream.base_rate
    if not rate:
        logger.warning("%s stores no frame rate; assuming %s fps", stream.container.name, DEFAULT_FPS)
        return DEFAULT_FPS
    return float(rate)


def _gif_complete(path: Path) -> bool:
    """A GIF ends with the trailer byte 0x3B; PyAV decodes a cut-off GIF without complaint."""
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\x3b"


def _frame_files(folder: Path) -> list[Path]:
    """The folder's PNG/JPG frames in numeric order (`frame_9999` before `frame_10000`)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise VideoReadError(folder, "the folder holds no PNG or JPG frames")
    return sorted(files, key=lambda p: (len(p.stem), p.stem))


def _read_folder(folder: Path, max_frames: int | None) -> tuple[np.ndarray, float]:
    frames = [_read_image(p) for p in _frame_files(folder)[:max_frames]]
    sizes = sorted({frame.shape for frame in frames})
    if len(sizes) > 1:
        raise VideoReadError(folder, f"the frames differ in size: {sizes}")
    return np.stack(frames), _folder_fps(folder)


def _read_image(path: Path) -> np.ndarray:
    try:
        return iio.imread(path, mode="RGB")
    except (OSError, ValueError) as err:
        raise VideoReadError(path, f"not a readable image ({err})") from err


def _folder_fps(folder: Path) -> float:
    record_path = folder / "metadata.json"
    if not record_path.is_file():
        return DEFAULT_FPS
    try:
        fps = json.loads(record_path.read_text()).get("fps", DEFAULT_FPS)
    except (json.JSONDecodeError, AttributeError) as err:
        raise VideoReadError(record_path, f"not a JSON object ({err})") from err
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
        raise VideoReadError(record_path, f"fps must be a positive number, got {fps!r}")
    return float(fps)
