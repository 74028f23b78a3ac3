"""Video files in and out. Frames are numpy `uint8` arrays shaped `(f, h, w, 3)`, RGB, at every boundary.

`write_video` picks the format from the path: `.mp4` (H.264, yuv420p, faststart), `.webm` (VP9, yuv420p), `.mkv`
(FFV1, lossless RGB: for training data, since yuv420p halves the colour resolution), `.gif`
(palette built from the clip itself, loops forever) or, for a path without a suffix or ending in `/`, a folder of
`frame_0000.png ...` plus `metadata.json`. Everything is built beside its destination and renamed into place; an
existing output is refused unless the caller asks to overwrite it. `read_sidecar` reads a clip's record back,
checked against the clip's hash.

`read_video` decodes a whole file or folder, `read_frames` the frames at chosen indices, and `probe_video` reads the
header and counts the packets. They share one decoding layer: decord where it is installed and returns the right
frames, PyAV otherwise (GIF, AVI, open-GOP video) and where decord fails; "Which decoder" below holds every rule.
Every way a file can fail to decode ends in a `VideoReadError` that names the path and the reason.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import operator
import os
import re
import time
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np

from vidiff.atomic import atomic_dir, check_destination, destination_lock, publish_file, temporary_path
from vidiff.errors import VidiffInputError, reporting_full_disk

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
    # lossless: every pixel comes back exactly (yuv420p's halved chroma blurs coloured edges by a full pixel)
    ".mkv": dict(codec="ffv1", pix_fmt_out="bgr0", output_params=["-level", "3"]),
    # a palette from the clip's own colours: clips with <= 255 colours come back exactly
    ".gif": dict(codec="gif", pix_fmt_out="pal8",
                 output_params=["-filter_complex", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-loop", "0"]),
}
WRITE_SUFFIXES = tuple(_FFMPEG)  # the file formats write_video writes; any other path is a folder of PNGs
_LISTED = ", ".join(s + (" (lossless)" if s == ".mkv" else "") for s in WRITE_SUFFIXES)
SUPPORTED_OUTPUTS = f"use {_LISTED}, or a path without a suffix (or ending in '/') for a folder of PNG frames"


class VideoReadError(VidiffInputError):
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

def write_video(frames: np.ndarray, path: str | os.PathLike, fps: float = 8, metadata: Mapping | None = None,
                overwrite: bool = False) -> Path:
    """Write `frames` (uint8, (f, h, w, 3)) to `path` atomically and return the path.

    The format follows the suffix (`.mp4`, `.gif`, `.webm`, `.mkv`; none or a trailing `/` for a PNG folder). Frames
    are never resized or padded: H.264 yuv420p needs an even width and height, so odd sizes are refused for `.mp4`
    (GIF, WebM, MKV and PNG take any size). Grey `(f, h, w, 1)` frames are refused too; repeat the channel first.
    With `metadata`, `path + ".json"` is written as well, holding it plus `frames`, `fps`, `height`, `width`,
    `format` and the clip's `sha256`; a PNG folder always gets that record (without a hash) as `metadata.json`
    inside, so that its fps survives a round trip.
    An existing output is refused (`FileExistsError`) unless `overwrite`; even then a folder holding anything but
    frames and metadata.json is never replaced. The clip is published before its sidecar, both under a lock on the
    destination, so of two writers racing for one path without `overwrite` one fails and the other's pair stands;
    `read_sidecar` checks the hash, so no reader takes one writer's sidecar for another's clip.
    On any error nothing changes at `path`, and no temporary file is left behind.
    """
    # 1. Check inputs, before anything touches the disk
    suffix = _output_suffix(path)
    _check_frames(frames, suffix)
    fps = _check_fps(fps)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    path = Path(path)
    check_video_destination(path, overwrite)

    # 2. A PNG folder: build it in a temporary folder, then swap it in
    needed = estimated_bytes(*frames.shape[:3], suffix)  # for the message if the disk fills up
    if suffix == "":
        record = _sidecar_text(frames, fps, suffix, metadata)
        with atomic_dir(path, overwrite=overwrite, replaceable=is_frame_folder, size_hint=needed) as tmp:
            for index, frame in enumerate(frames):
                iio.imwrite(tmp / f"frame_{index:04d}.png", frame)
            (tmp / "metadata.json").write_text(record)
        return path

    # 3. A video file: encode beside the destination and check it, write the sidecar with the clip's hash beside its
    # destination, then publish the clip and, last, its sidecar
    sidecar = sidecar_path(path)
    with temporary_path(path) as clip_tmp, temporary_path(sidecar) as sidecar_tmp:
        with reporting_full_disk(path.parent, needed, lambda: clip_tmp.stat().st_size):  # ffmpeg: "wrote 5 frames"
            _encode(frames, clip_tmp, fps, suffix)
            _check_written(clip_tmp, frames)
        if metadata is not None:
            sidecar_tmp.write_text(_sidecar_text(frames, fps, suffix, metadata, sha256=file_sha256(clip_tmp)))
        with destination_lock(path):
            check_video_destination(path, overwrite)
            if metadata is None:
                sidecar.unlink(missing_ok=True)  # (overwrite) an older clip's record must not stay beside this one
            publish_file(clip_tmp, path, overwrite)
            if metadata is not None:
                publish_file(sidecar_tmp, sidecar, overwrite)
    return path


def estimated_bytes(num_frames: int, height: int, width: int, suffix: str) -> int:
    """About how many bytes `write_video` writes for such a clip (`suffix` as `_output_suffix` gives it), on the
    high side: PNG and lossless MKV up to the raw frames, GIF a byte per pixel, H.264 / VP9 a quarter of the raw
    frames (what they reach on noise at their quality settings), plus the sidecar."""
    raw = num_frames * height * width * 3
    return {"": raw, ".mkv": raw, ".gif": raw // 3}.get(suffix, raw // 4) + 64 * 1024


def check_video_destination(path: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse, before any work, an output of `write_video` that exists (the clip, or a sidecar at its sidecar's
    path), unless `overwrite`; even then refuse a folder that is not a frame folder (`FileExistsError`)."""
    path = Path(path)
    if _output_suffix(path) == "":
        check_destination(path, overwrite, replaceable=is_frame_folder)
        return
    check_destination(path, overwrite)
    check_destination(sidecar_path(path), overwrite)


def is_frame_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder holding nothing but `frame_NNNN.png` files and `metadata.json` (what `write_video`
    writes), so that replacing it loses nothing else."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and all(
        re.fullmatch(r"frame_\d{4,}\.png|metadata\.json", entry.name) for entry in path.iterdir())


def read_sidecar(path: str | os.PathLike, timeout_s: float = 2.0) -> dict:
    """The record `write_video` wrote with `path`: its sidecar, or a PNG folder's metadata.json.

    A sidecar whose `sha256` is not the clip's belongs to another writer's clip: one caught between publishing its
    clip and its sidecar is read again until `timeout_s`; after that it is a `VidiffInputError`.
    """
    path = Path(path)
    if path.is_dir():
        return _read_record(path / "metadata.json")
    sidecar = sidecar_path(path)
    deadline = time.monotonic() + timeout_s
    while True:
        record = _read_record(sidecar)
        if "sha256" not in record or record["sha256"] == file_sha256(path):
            return record
        if time.monotonic() > deadline:
            raise VidiffInputError(f"{sidecar} does not describe {path}: its sha256 is another clip's (the clip "
                                   "was replaced without its sidecar)")
        time.sleep(0.01)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise VidiffInputError(f"{path} is not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise VidiffInputError(f"{path} must hold a JSON object")
    return record


def video_suffix(path: str | os.PathLike) -> str:
    """The format `write_video` writes at `path`: its suffix, or "" for a PNG folder (`VidiffInputError` for a suffix
    it cannot write)."""
    return _output_suffix(path)


def _output_suffix(path: str | os.PathLike) -> str:
    """The written format's suffix, or "" for a PNG folder; VidiffInputError for anything else."""
    raw = os.fspath(path)
    suffix = Path(raw).suffix.lower()
    if raw.endswith(("/", os.sep)) or suffix == "":
        return ""
    if suffix not in _FFMPEG:
        raise VidiffInputError(f"cannot write videos with extension {suffix!r} ({raw}); {SUPPORTED_OUTPUTS}")
    return suffix


def check_frames(frames: np.ndarray, name: str = "frames", min_frames: int = 1) -> None:
    """The one check of the frames vidiff passes around: a numpy uint8 array (f, h, w, 3), f >= min_frames."""
    if not isinstance(frames, np.ndarray):
        raise VidiffInputError(f"{name} must be a numpy uint8 array shaped (f, h, w, 3), got {type(frames).__name__}")
    got = f"got {frames.dtype} array of shape {frames.shape}"
    if frames.dtype != np.uint8:
        raise VidiffInputError(f"{name} must be uint8 (0..255), {got}; convert with (x * 255).round().astype(np.uint8)")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VidiffInputError(f"{name} must be shaped (f, h, w, 3) RGB, {got}; repeat a grey channel to 3 first")
    if 0 in frames.shape[1:] or len(frames) < min_frames:
        raise VidiffInputError(f"{name} must hold at least {min_frames} frames of at least 1x1 pixels, {got}")


def _check_frames(frames: np.ndarray, suffix: str) -> None:
    check_frames(frames)
    height, width = frames.shape[1:3]
    if suffix == ".mp4" and (height % 2 or width % 2):
        raise VidiffInputError(f"H.264 (.mp4) needs an even width and height, got {width}x{height}; "
                               "crop or resize to an even size, or write a .gif, .webm or PNG folder")


def _check_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not 0 < fps < math.inf:
        raise VidiffInputError(f"fps must be a positive number, got {fps!r}")
    return int(fps) if float(fps).is_integer() else float(fps)


def _sidecar_text(frames: np.ndarray, fps: float, suffix: str, metadata: Mapping | None,
                  sha256: str | None = None) -> str:
    """The JSON record: the caller's metadata plus what the file really holds (which wins on a clash)."""
    f, h, w, _ = frames.shape
    record = {**(metadata or {}), "frames": f, "fps": fps, "height": h, "width": w, "format": suffix[1:] or "png"}
    if sha256 is not None:
        record["sha256"] = sha256
    return json.dumps(record, indent=2, default=str) + "\n"


def _encode(frames: np.ndarray, path: Path, fps: float, suffix: str) -> None:
    """Pipe the frames through ffmpeg; macro_block_size=1 keeps the true size (imageio-ffmpeg resizes otherwise)."""
    import imageio_ffmpeg  # only writing needs the ffmpeg binary it ships; reading goes through decord / PyAV

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

    `max_frames` keeps the first that many frames. `backend` is "auto" (see `read_frames`), "decord" or "pyav".
    A file's fps comes from its header, else 8 (with a warning); a folder's from its `metadata.json`, else 8.
    Raises `VideoReadError` for a missing, empty, non-video, truncated or frameless input.
    """
    _check_backend(backend)
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be a positive int or None, got {max_frames!r}")
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = _frame_files(path)
        return _read_folder(path, files, list(range(len(files)))[:max_frames]), _folder_fps(path)
    info, open_gop = _scan(path)
    decord = _pick_decord(path, backend, open_gop)
    frames, _ = _decode(path, list(range(info["frames"]))[:max_frames], decord, fallback=backend == "auto")
    if info["fps"] is None:
        logger.warning("%s stores no frame rate; assuming %s fps", path, DEFAULT_FPS)
    return frames, info["fps"] or DEFAULT_FPS


def read_frames(path: str | os.PathLike, indices: list[int], backend: str = "auto") -> np.ndarray:
    """The frames at `indices` (in that order, repeats allowed) of a video file or frame folder, as uint8
    `(len(indices), h, w, 3)`.

    `backend`: "auto" picks decord where it is installed and returns the right frames, PyAV otherwise (GIF, AVI,
    open-GOP video), and PyAV again where decord fails; it reads every packet once to spot open GOPs, so a caller
    reading one file many times passes `probe_video(path)["backend"]` instead. "decord" or "pyav" use that decoder
    only ("decord" is refused for GIF and AVI). Raises `VideoReadError` (path and reason) if any frame is missing
    or does not decode.
    """
    _check_backend(backend)
    indices = _check_indices(indices)
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return _read_folder(path, _frame_files(path), indices)
    frames, _ = _decode(path, indices, _pick_decord(path, backend), fallback=backend == "auto")
    return frames


def probe_video(path: str | os.PathLike, check: bool = False) -> dict:
    """`{"frames", "fps", "height", "width", "backend"}` of a video file or frame folder, from the header and one
    pass over the packets, without decoding.

    `frames` counts the packets (a file holding fewer than its header lists is truncated: `VideoReadError`);
    `fps` is None where a file stores no frame rate; `backend` is the decoder `read_frames(path, ..., "auto")`
    tries first ("decord", "pyav", or "imageio" for a folder). With `check=True` the first and last frames are
    decoded as well, so that a file that passes reads to its end, and `backend` names the decoder that managed.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = _frame_files(path)
        height, width = _read_image(files[0]).shape[:2]
        if check:
            _read_folder(path, files, [0, len(files) - 1])
        return {"frames": len(files), "fps": _folder_fps(path), "height": height, "width": width,
                "backend": "imageio"}
    info, open_gop = _scan(path)
    decord = _pick_decord(path, "auto", open_gop)
    info["backend"] = "pyav" if decord is None else "decord"
    if check:
        _, info["backend"] = _decode(path, sorted({0, info["frames"] - 1}), decord, fallback=True)
    return info


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _check_indices(indices) -> list[int]:
    try:
        checked = [operator.index(index) for index in indices]
    except TypeError:
        checked = []
    if not checked or min(checked) < 0:
        raise ValueError(f"indices must be a non-empty list of frame numbers >= 0, got {indices!r}")
    return checked


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VideoReadError(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")


def _check_range(path: Path, index: int, count: int) -> None:
    if index >= count:
        raise VideoReadError(path, f"it holds {count} frames, so there is no frame {index}")


# ----------------------------------------------------------------------------------------------------------------
# Which decoder: the one place that knows where decord and PyAV go wrong
# ----------------------------------------------------------------------------------------------------------------

# decord seeks through its own frame index; PyAV (here) seeks to a keyframe and numbers frames by timestamp. decord
# goes wrong in three ways:
# - silently, by container: it cannot read GIFs, and in an AVI with B-frames its random access returns the wrong
#   frames (AVI stores decode times only). `_DECORD_REFUSED`: "auto" decodes these with PyAV, "decord" is refused.
# - silently, by file: in open-GOP video (frames shown before the keyframe they follow in the file) its random
#   access returns wrong frames too. Only a pass over the packets tells (`_scan`); "auto" then decodes with PyAV.
# - loudly: decord 0.6 cannot copy out frames of some widths (24, 48, 72, ...) and cannot open some files that
#   PyAV can. "auto" falls back to PyAV.
# PyAV goes wrong where timestamps are decode times (`_DECODE_TIMES_ONLY`): there it counts frames from the first.
_DECORD_REFUSED = {
    ".gif": "decord cannot read GIFs",
    ".avi": "decord returns wrong frames when it seeks in an AVI with B-frames",
}
_DECODE_TIMES_ONLY = (".avi",)


def _pick_decord(path: Path, backend: str, open_gop: bool | None = None):
    """The decord module if it should decode `path`, else None (decode with PyAV). `open_gop`: whether the file
    is open-GOP video, where the caller has read its packets already (`_scan`); "auto" reads them otherwise."""
    if backend == "pyav":
        return None
    refusal = _DECORD_REFUSED.get(path.suffix.lower())
    if refusal is not None:
        if backend == "decord":
            raise VidiffInputError(f"{refusal} ({path}); use backend='pyav' or 'auto'")
        return None
    decord = _import_decord()
    if decord is None and backend == "decord":
        raise VidiffInputError("backend='decord' needs the decord package; install it or use backend='pyav'")
    if decord is not None and backend == "auto" and (_scan(path)[1] if open_gop is None else open_gop):
        return None
    return decord


def _import_decord():
    """The decord module, or None where it is not installed (it ships x86-64 wheels only)."""
    try:
        return importlib.import_module("decord")
    except ImportError:
        return None


def _decode(path: Path, indices: list[int], decord, fallback: bool) -> tuple[np.ndarray, str]:
    """`(frames at indices, the backend that decoded them)`: with decord if given (then with PyAV where decord
    fails and `fallback` is set), else with PyAV."""
    if decord is not None:
        try:
            return _read_decord(decord, path, indices), "decord"
        except VideoReadError as err:
            if not fallback:
                raise
            logger.debug("decord failed on %s (%s); decoding with PyAV", path, err.reason)
    return _read_pyav(path, indices), "pyav"


# ----------------------------------------------------------------------------------------------------------------
# decord
# ----------------------------------------------------------------------------------------------------------------

def _read_decord(decord, path: Path, indices: list[int]) -> np.ndarray:
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        _check_range(path, max(indices), len(reader))
        batch = reader.get_batch(indices)
    except (decord.DECORDError, RuntimeError) as err:
        raise VideoReadError(path, f"decord could not decode it ({_first_line(err)})") from err
    frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)  # a torch bridge returns tensors
    if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
        raise VideoReadError(path, f"decord returned frames of shape {frames.shape}")
    return frames


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# ----------------------------------------------------------------------------------------------------------------
# PyAV
# ----------------------------------------------------------------------------------------------------------------

@contextmanager
def _open(path: Path):
    """`(container, video stream)`; PyAV and OS errors inside the block become `VideoReadError`s."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(path, "it has no video stream")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise VideoReadError(path, "no decoder for its video codec")
            stream.thread_type = "AUTO"
            yield container, stream
    except (av.FFmpegError, OSError) as err:
        raise VideoReadError(path, f"not a readable video ({getattr(err, 'strerror', None) or err})") from err


def _packets(container, stream):
    """The stream's non-empty packets, in decode order."""
    return (packet for packet in container.demux(stream) if packet.size)


def _scan(path: Path) -> tuple[dict, bool]:
    """`({"frames", "fps", "height", "width"}, open_gop)` from the header and one pass over the packets (no
    decoding); `VideoReadError` for a file without frames, or with fewer than its header lists."""
    count, open_gop, keyframe_pts = 0, False, None
    with _open(path) as (container, stream):
        for packet in _packets(container, stream):
            count += 1
            if packet.is_keyframe:
                keyframe_pts = packet.pts
            elif None not in (packet.pts, keyframe_pts) and packet.pts < keyframe_pts:
                open_gop = True  # shown before the keyframe it follows in the file
        info = {"frames": count, "fps": _stream_fps(stream), "height": stream.height, "width": stream.width}
        listed = stream.frames
    if count == 0:
        raise VideoReadError(path, "it holds no frames")
    if listed and count < listed:
        raise VideoReadError(path, f"truncated: the header lists {listed} frames, the file holds {count}")
    if path.suffix.lower() == ".gif" and not _gif_complete(path):
        raise VideoReadError(path, "truncated GIF (no trailer byte)")
    return info, open_gop


def _stream_fps(stream) -> float | None:
    rate = stream.guessed_rate or stream.average_rate or stream.base_rate
    return float(rate) if rate else None


def _gif_complete(path: Path) -> bool:
    """A GIF ends with the trailer byte 0x3B; PyAV decodes a cut-off GIF without complaint."""
    with open(path, "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\x3b"


def _read_pyav(path: Path, indices: list[int]) -> np.ndarray:
    """The frames at `indices`, decoded from the keyframe at or before the first of them."""
    last, wanted, decoded = max(indices), set(indices), {}
    with _open(path) as (container, stream):
        for index, frame in _numbered_frames(path, container, stream, min(indices), last):
            if index in wanted:
                decoded[index] = frame.to_ndarray(format="rgb24")
            if index is not None and index >= last:
                break
    missing = sorted(wanted - set(decoded))
    if missing:
        raise VideoReadError(path, f"frame {missing[0]} did not decode")
    if len({frame.shape for frame in decoded.values()}) > 1:
        raise VideoReadError(path, "the frame size changes within the video")
    return np.stack([decoded[index] for index in indices])


def _numbered_frames(path: Path, container, stream, first: int, last: int):
    """`(frame index or None, frame)` in presentation order, from at or before frame `first`.

    The index is the frame's timestamp's rank among the packets' timestamps; decoding starts at the last keyframe
    shown no later than frame `first` (seeking to its decode time, in case the container seeks by those). Where
    the timestamps are decode times (`_DECODE_TIMES_ONLY`) frames are counted from the first one instead: always
    right, but slow deep into long files.
    """
    packets = [(packet.pts, packet.dts, packet.is_keyframe) for packet in _packets(container, stream)]
    if path.suffix.lower() in _DECODE_TIMES_ONLY:
        _check_range(path, last, len(packets))
        container.seek(min(t for t in packets[0][:2] if t is not None), stream=stream)
        yield from enumerate(container.decode(stream))
        return
    pts = sorted(p for p, _, _ in packets if p is not None)
    _check_range(path, last, len(pts))
    rank = {timestamp: index for index, timestamp in enumerate(pts)}
    starts = [min(p, p if d is None else d) for p, d, key in packets if key and p is not None and p <= pts[first]]
    container.seek(max(starts, default=pts[0]), stream=stream)
    for frame in container.decode(stream):
        yield rank.get(frame.pts), frame


# ----------------------------------------------------------------------------------------------------------------
# Frame folders
# ----------------------------------------------------------------------------------------------------------------

def _frame_files(folder: Path) -> list[Path]:
    """The folder's PNG/JPG frames in numeric order (`frame_9999` before `frame_10000`)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise VideoReadError(folder, "the folder holds no PNG or JPG frames")
    return sorted(files, key=lambda p: (len(p.stem), p.stem))


def _read_folder(folder: Path, files: list[Path], indices: list[int]) -> np.ndarray:
    _check_range(folder, max(indices), len(files))
    frames = [_read_image(files[index]) for index in indices]
    sizes = sorted({frame.shape for frame in frames})
    if len(sizes) > 1:
        raise VideoReadError(folder, f"the frames differ in size: {sizes}")
    return np.stack(frames)


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
