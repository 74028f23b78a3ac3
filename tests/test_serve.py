"""`vidiff serve`: the page's requests against the CLI's clips, its checks, its gallery, and a served process driven
by gradio_client (calls at once, a full queue, defaults, paths and uploads). The browser test is test_serve_browser.py.
"""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import QueueError, Status  # noqa: E402

from vidiff.cli import build_parser, main  # noqa: E402
from vidiff.cli import serve as serve_command  # noqa: E402
from vidiff.cli.serve_app import INPUT_NAMES  # noqa: E402
from vidiff.io.video import read_video  # noqa: E402
from vidiff.model_folder import default_model  # noqa: E402
from vidiff.testing.server import serve  # noqa: E402

SMALL = dict(num_frames=4, steps=2, interpolate=1, upscale=1)  # a clip in about a second on one CPU core


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """The page's Generator over the default cascade, loaded as `vidiff serve` loads it."""
    folder = tmp_path_factory.mktemp("served")
    args = build_parser().parse_args(["serve", "--output-dir", str(folder), "--threads", "1"])
    model, output_dir, _ = serve_command.check_inputs(args)
    return serve_command.load_generator(args, model, output_dir)


def sidecar(path) -> dict:
    return json.loads(Path(f"{path}.json").read_text())


@pytest.mark.parametrize("flags, message", [(["--max-queue", "0"], "--max-queue 0 must be at least 1"),
                                            (["--port", "{busy}"], "cannot listen on 127.0.0.1 port {busy}")])
def test_help_and_bad_flags_answer_without_gradio(flags, message):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        flags = [flag.format(busy=port) for flag in flags]
        code = ("import sys; from vidiff.cli import build_parser, main; build_parser().format_help(); "
                f"rc = main(['serve', *{flags!r}]); print(rc, 'gradio' in sys.modules, 'diffusers' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False", "False"], result.stderr
    assert message.format(busy=port) in result.stderr


def test_a_page_request_makes_the_cli_clip_and_sidecar(generator, tmp_path, capsys):
    settings = dict(seed=7, num_frames=4, steps=2, interpolate=2, upscale=2)
    cli_clip = tmp_path / "cli.mp4"
    assert main(["generate", "a red circle moving right", "-o", str(cli_clip), "--seed", "7", "--num-frames", "4",
                 "--steps", "2", "--interpolate", "2", "--upscale", "2", "--threads", "1"]) == 0
    clip, gif, record, summary = generator.generate("a red circle moving right", **settings)
    frames, fps = read_video(clip)
    assert frames.shape == (7, 128, 128, 3) and fps == pytest.approx(16, abs=0.1)  # (4 - 1) * 2 + 1, 64 * 2
    assert np.array_equal(frames, read_video(cli_clip)[0])
    assert read_video(gif)[0].shape == frames.shape
    served, made = json.loads(Path(record).read_text()), sidecar(cli_clip)
    assert Path(clip).parent == generator.output_dir and served["output"] == clip
    for key in ("output", "timings"):
        served.pop(key), made.pop(key)
    for stage in ("base", "interpolation", "upscale"):
        assert served[stage] == made[stage], stage
    assert served == made
    assert "Seed **7**" in summary and "7 frames, 128x128, 16 fps" in summary
    # every stage's progress bar is named, so the page shows one bar per stage (Gradio tracks the bars)
    err = capsys.readouterr().err
    assert all(name in err for name in ("base steps", "interpolation", "upscaling")), err


@pytest.mark.parametrize("change, message", [
    (dict(prompt="   "), "the prompt is empty"),
    (dict(num_frames=17), "num_frames=17 is outside 1..16 for the model"),
    (dict(height=60), "height=60 must be a positive multiple of 8"),
    (dict(num_frames=1, interpolate=2), "interpolation needs at least 2 frames"),
    (dict(upscale=3), "scale 3 is not reachable with this 2x upscaler"),
    (dict(interpolate=0), "interpolation factor 0 must be an integer of at least 1"),
    (dict(steps=2.5), "steps 2.5 must be a whole number"),
    (dict(steps=1000), "steps 1000 must be within 1..100"),
    (dict(seed=-1), "seed -1 must be within"),
    (dict(seed="1e3"), "seed '1e3' must be a whole number"),
    (dict(scheduler="pndm"), "unknown scheduler 'pndm'"),
])
def test_bad_requests_are_errors_in_the_page(generator, change, message):
    request = {"prompt": "a red circle moving right", **SMALL, **change}
    with pytest.raises(gr.Error, match=message) as error:
        generator.generate(**request)
    assert str(default_model()) not in error.value.message  # the server's folders are not spelled out
    assert not list(generator.output_dir.glob("*.tmp*"))


def test_the_gallery_lists_results_and_a_click_restores_their_settings(generator):
    clip, _, _, summary = generator.generate("a blue square moving left", negative_prompt="blur", guidance=2.5,
                                             scheduler="euler", **SMALL)  # no seed: a random one, shown
    seed = sidecar(clip)["seed"]
    assert f"Seed **{seed}**" in summary
    gif = Path(clip).with_suffix(".gif")
    assert (str(gif), f"a blue square moving left · seed {seed} · 4 frames 64x64 · 2 steps") in \
        generator.results.gallery()
    # a restarted server lists the folder's results again, and a click restores the inputs that made one
    restarted = type(generator.results)(generator.output_dir)
    assert restarted.gallery() == generator.results.gallery()
    click = gr.SelectData(None, {"index": 0, "value": {"image": {"path": "/elsewhere/x.gif", "orig_name": gif.name},
                                                       "caption": ""}})
    restored = dict(zip((*INPUT_NAMES, "clip"), generator.restore(click)))
    assert restored == {"prompt": "a blue square moving left", "negative_prompt": "blur", "seed": str(seed),
                        "num_frames": 4, "steps": 2, "guidance": 2.5, "scheduler": "euler", "interpolate": 1,
                        "upscale": 1, "height": 64, "width": 64, "lora": "none", "lora_scale": 1.0, "image": None,
                        "video": None, "strength": 0.6, "clip": clip}
    unknown = gr.SelectData(None, {"index": 0, "value": {"image": {"path": "/etc/passwd"}}})
    with pytest.raises(gr.Error, match="not on this server"):
        generator.restore(unknown)


def test_the_servers_loras_images_and_videos_make_the_clips_the_commands_make(tmp_path, capsys):
    """A LoRA the server offers (the shipped pan-down MotionLoRA), an uploaded image and an uploaded video give the
    clips `vidiff generate --lora`, `vidiff animate` and `vidiff restyle` give, byte for byte, with their records."""
    import vidiff
    from PIL import Image

    from vidiff.data.shapes import render_clip
    from vidiff.io.video import write_video

    lora = Path(vidiff.__file__).parent / "assets" / "examples" / "pan-down-lora.safetensors"
    args = build_parser().parse_args(["serve", "--output-dir", str(tmp_path / "served"), "--threads", "1",
                                      "--lora", f"{lora}=0.5"])
    model, output_dir, _ = serve_command.check_inputs(args)
    served = serve_command.load_generator(args, model, output_dir)
    assert list(served.loras) == ["pan-down-lora"]
    cli = ["--seed", "3", "--num-frames", "4", "--steps", "2", "--interpolate", "1", "--upscale", "1",
           "--threads", "1", "--no-progress"]
    small = dict(seed=3, num_frames=4, steps=2, interpolate=1, upscale=1)

    def same_clip(page_clip, command):
        assert main(command) == 0
        out = Path(command[command.index("-o") + 1])
        assert Path(page_clip).read_bytes() == out.read_bytes()
        return sidecar(page_clip), sidecar(out)

    # a LoRA at the page's scale, then none (the base's clip again), then at its default
    page, made = same_clip(served.generate("a blue square moving left", lora="pan-down-lora", lora_scale=0.8,
                                           **small)[0],
                           ["generate", "a blue square moving left", "-o", str(tmp_path / "lora.mp4"), *cli,
                            "--lora", f"{lora}=0.8"])
    assert page["loras"] == [{"name": "pan-down-lora", **made["loras"][0]}] and made["loras"][0]["scale"] == 0.8
    page, made = same_clip(served.generate("a blue square moving left", lora="none", **small)[0],
                           ["generate", "a blue square moving left", "-o", str(tmp_path / "none.mp4"), *cli])
    assert "loras" not in page
    assert sidecar(served.generate("a blue square moving left", lora="pan-down-lora", **small)[0])["loras"][0][
        "scale"] == 0.5
    with pytest.raises(gr.Error, match="unknown LoRA '../x.safetensors'; this server offers pan-down-lora"):
        served.generate("a blue square moving left", lora="../x.safetensors", **small)

    # an image to animate, and a video to restyle
    first = render_clip("green", "triangle", "up", num_frames=1, size=64, seed=0)[0]
    image = tmp_path / "first.png"
    Image.fromarray(first).save(image)
    same_clip(served.generate("a green triangle moving up", image=first, **small)[0],
              ["animate", str(image), "a green triangle moving up", "-o", str(tmp_path / "animated.mp4"), *cli])
    source = tmp_path / "source.mp4"
    write_video(render_clip("red", "circle", "right", num_frames=4, size=64, seed=1), source, fps=8)
    small.pop("num_frames")
    page, made = same_clip(served.generate("a blue circle moving right", video=str(source), strength=0.7, **small)[0],
                           ["restyle", str(source), "a blue circle moving right", "--strength", "0.7", "-o",
                            str(tmp_path / "restyled.mp4"), *[c for c in cli if c not in ("--num-frames", "4")]])
    assert page["strength"] == 0.7 and page["num_frames"] == made["num_frames"] == 4
    with pytest.raises(gr.Error, match="the uploaded image is 32x32 but the clip is 64x64"):
        served.generate("x", image=first[:32, :32], **small)
    with pytest.raises(gr.Error, match="not both"):
        served.generate("x", image=first, video=str(source), **small)
    (tmp_path / "not-a-video.mp4").write_bytes(b"not a video")
    with pytest.raises(gr.Error, match="the uploaded video could not be read"):
        served.generate("x", video=str(tmp_path / "not-a-video.mp4"), **small)


# ----------------------------------------------------------------------------------------------------------------
# A served process
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    with serve("--max-queue", "2", "--max-upload-mb", "1", "--output-dir", str(folder / "clips"), "--threads", "1",
               cwd=folder) as running:
        yield running


def wait_for(job, codes, timeout=120):
    deadline = time.monotonic() + timeout
    while job.status().code not in codes and not job.done():
        assert time.monotonic() < deadline, job.status()
        time.sleep(0.05)


def test_calls_at_once_each_get_their_own_clip_and_a_full_queue_says_so(server):
    client = Client(server.url, verbose=False)
    # a long call holds the model while two more wait (--max-queue 2), so the fourth finds the queue full
    long = client.submit("a red circle moving right", seed=1, num_frames=16, steps=25, interpolate=1, upscale=1,
                         api_name="/generate")
    wait_for(long, (Status.PROCESSING, Status.PROGRESS))
    waiting = []
    for prompt, seed in (("a blue square moving left", 2), ("a green triangle moving up", 3)):
        waiting.append(client.submit(prompt, seed=seed, **SMALL, api_name="/generate"))
        wait_for(waiting[-1], (Status.IN_QUEUE,))
    assert not long.done()
    with pytest.raises(QueueError, match="Queue is full"):
        client.submit("a white circle moving down", **SMALL, api_name="/generate").result(timeout=60)
    stages = set()  # the page's progress bar: the base's steps, named
    while not long.done():
        stages.update(progress.desc for progress in long.status().progress_data or ())
        time.sleep(0.05)
    assert "base steps" in stages
    results = [job.result(timeout=300) for job in (long, *waiting)]
    clips = [result[0] for result in results]
    assert len(set(clips)) == 3
    for clip, (prompt, seed, frames) in zip(clips, (("a red circle moving right", 1, 16),
                                                   ("a blue square moving left", 2, 4),
                                                   ("a green triangle moving up", 3, 4))):
        assert read_video(clip)[0].shape == (frames, 64, 64, 3)
        record = json.loads(Path(results[clips.index(clip)][2]).read_text())
        assert (record["prompt"], record["seed"]) == (prompt, seed)


def test_the_api_takes_the_models_defaults_refuses_bad_input_and_paths(server):
    import httpx

    assert server.url.startswith("http://127.0.0.1:")  # this machine only, unless --host says otherwise
    client = Client(server.url, verbose=False)
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    assert parameters[0]["parameter_name"] == "prompt" and not parameters[0]["parameter_has_default"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in parameters[1:] if p["parameter_has_default"]}
    assert defaults == {"negative_prompt": "", "seed": "", "num_frames": 16, "steps": 25, "guidance": 1.5,
                        "scheduler": "ddim", "interpolate": 4, "upscale": 2, "height": 64, "width": 64,
                        "lora": "none", "lora_scale": 1.0, "image": None, "video": None, "strength": 0.6}
    with pytest.raises(AppError, match="the prompt is empty"):
        client.predict("", api_name="/generate")
    with pytest.raises(AppError, match="17 is greater than maximum value 16"):
        client.predict("a red circle", num_frames=17, api_name="/generate")
    # no file outside Gradio's cache and the output folder is served, and uploads are bounded by --max-upload-mb
    for path in ("/etc/passwd", str(default_model() / "model_index.json"), str(server.log)):
        assert httpx.get(f"{server.url}gradio_api/file={path}").status_code in (403, 404), path
    big = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("big.mp4", b"\0" * (2 * 1024 * 1024))})
    assert big.status_code == 413, big.text
    # and the server still answers
    clip = client.predict("a yellow square moving right", **SMALL, api_name="/generate")[0]
    assert read_video(clip)[0].shape == (4, 64, 64, 3)
