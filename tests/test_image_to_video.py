"""Image to video: `pipe(prompt, image=...)` on a text-to-video model (reconstruction guidance) and on a masked-frame
model, through the cascade and `vidiff animate`; frame 0 comes back pixel for pixel."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import randomize_temporal
from PIL import Image
from test_cascade import cascade  # noqa: F401  (the tiny cascade fixture)

from vidiff.cli import main
from vidiff.data.shapes import render_clip
from vidiff.io.video import read_video
from vidiff.pipelines import animate
from vidiff.pipelines.cascade import VideoCascadePipeline
from vidiff.pipelines.text_to_video import TextToVideoPipeline

FAST = dict(num_inference_steps=2, height=64, width=64, show_progress=False)


@pytest.fixture(scope="module")
def image():
    return render_clip("green", "circle", "left", num_frames=1, size=64, seed=3)[0]


@pytest.fixture(scope="module")
def base(tiny_video_folder):
    pipe = TextToVideoPipeline.from_pretrained(tiny_video_folder)
    randomize_temporal(pipe.unet)
    return pipe


def test_a_text_to_video_model_animates_an_image_and_returns_it_as_frame_0(base, image):
    out = base("a green circle moving left", image=image, num_frames=5, generator=torch.Generator().manual_seed(0),
               **FAST).frames
    assert out.shape == (1, 5, 64, 64, 3)
    np.testing.assert_array_equal(out[0, 0], image)
    pil = base("a green circle moving left", image=Image.fromarray(image), num_frames=5, output_type="pt",
               generator=torch.Generator().manual_seed(0), **FAST).frames
    torch.testing.assert_close(pil[0, :, 0], torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    assert np.abs((pil[0, :, 1:].permute(1, 2, 3, 0).numpy() * 255).round() - out[0, 1:]).max() <= 1


def test_reconstruction_guidance_moves_only_the_unknown_frames(base, image):
    shape = (1, 4, 4, 8, 8)
    known = animate.image_known(base, image, shape, torch.Generator().manual_seed(0))
    base.scheduler.set_timesteps(10)
    t = base.scheduler.timesteps[3]
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    text = base.encode_prompts(["a green circle"], None, "cpu", 1, True)
    with torch.no_grad():
        plain = base.predict_noise(latents, t, text, None, 2.0)
        unguided = animate.reconstruction_guided(base, latents, t, text, 2.0, known, 0.0)
        guided = animate.reconstruction_guided(base, latents, t, text, 2.0, known, 50.0)
    torch.testing.assert_close(unguided, plain, atol=1e-5, rtol=1e-5)
    # v-prediction: v = (a x_t - x0) / s, so a change of the estimate x0 shows in the unknown frames only
    torch.testing.assert_close(guided[:, :, :1], plain[:, :, :1], atol=1e-5, rtol=1e-5)
    assert (guided[:, :, 1:] - plain[:, :, 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_denoised_estimate_round_trips_every_prediction_type(prediction_type):
    a, s = torch.tensor(0.6), torch.tensor(0.8)
    x_t, out = torch.randn(2, 3), torch.randn(2, 3)
    x0 = animate._denoised(prediction_type, out, x_t, a, s)
    back = {"epsilon": (x_t - a * x0) / s, "v_prediction": (a * x_t - x0) / s, "sample": x0}[prediction_type]
    torch.testing.assert_close(back, out)


def test_the_cascade_animates_with_either_method_then_runs_its_stages(cascade, image):  # noqa: F811
    pipe = VideoCascadePipeline.from_pretrained(cascade)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_frames=3, height=64, width=64, num_inference_steps=2)
    clips = {}
    for method in ("masked", "guided"):
        out = pipe("a green circle", image=image, image_method=method, generator=torch.Generator().manual_seed(2),
                   interpolate=1, upscale=1, **kwargs)
        clips[method] = out.frames[0]
        assert out.frames.shape == (1, 3, 64, 64, 3)
        np.testing.assert_array_equal(out.frames[0, 0], image)
        assert out.metadata[0]["base"]["from"] == "image" and out.metadata[0]["base"]["image_method"] == method
    # masked: the interpolation stage's own call; guided: the base's
    for method, stage in (("masked", pipe.interpolation), ("guided", pipe.base)):
        alone = stage("a green circle", image=image, guidance_scale=pipe.guidance_scale, show_progress=False,
                      generator=torch.Generator().manual_seed(2), **kwargs).frames[0]
        np.testing.assert_array_equal(clips[method], alone)
    full = pipe("a green circle", image=image, generator=torch.Generator().manual_seed(2), **kwargs)
    assert full.frames.shape == (1, 5, 128, 128, 3)  # interpolated x2 and upscaled x2 by the cascade's defaults
    with pytest.raises(ValueError, match="unknown image_method"):
        pipe("x", image=image, image_method="magic", **kwargs)


def test_image_inputs_are_checked(base, image):
    with pytest.raises(ValueError, match=r"the image is 32x32 but the model samples 64x64.*height=32, width=32"):
        base("x", image=image[:32, :32], num_frames=3, **FAST)
    with pytest.raises(ValueError, match="uint8"):
        base("x", image=image.astype(np.float32), num_frames=3, **FAST)
    with pytest.raises(ValueError, match="at least 2 frames"):
        base("x", image=image, num_frames=1, **FAST)
    with pytest.raises(ValueError, match="not both"):
        base("x", image=image, video=image[None], num_frames=3, **FAST)


def test_animate_command_writes_the_clip_and_its_sidecar(cascade, image, tmp_path):  # noqa: F811
    Image.fromarray(image).save(tmp_path / "first.png")
    out = tmp_path / "frames"  # a folder of PNGs: lossless, so frame 0 can be compared exactly
    argv = ["animate", str(tmp_path / "first.png"), "a green circle moving left", "--model", str(cascade), "-o",
            str(out), "--num-frames", "3", "--steps", "2", "--interpolate", "1", "--upscale", "1", "--seed", "4",
            "--no-progress"]
    assert main(argv) == 0
    frames, _ = read_video(out)
    assert frames.shape == (3, 64, 64, 3)
    np.testing.assert_array_equal(frames[0], image)
    sidecar = json.loads((out / "metadata.json").read_text())
    assert sidecar["image"] == str(tmp_path / "first.png") and sidecar["image_method"] == "guided"
    assert sidecar["seed"] == 4 and sidecar["base"]["from"] == "image"


@pytest.mark.parametrize("make, extra, needle", [
    (lambda p: Image.new("RGB", (48, 40)).save(p), [],
     ("the image is 48x40 but the model samples 64x64.*--height 40 --width 48")),
    (lambda p: p.write_text("not a picture"), [], "cannot read image"),
    (lambda p: None, [], "image not found"),
    (lambda p: Image.new("RGB", (64, 64)).save(p), ["--num-frames", "1"], "at least 2"),
    (lambda p: Image.new("RGB", (64, 64)).save(p), ["--num-frames", "40", "--context-length", "17"],
     "more than the model's max_frames 16"),
])
def test_animate_bad_input_is_one_line_and_exit_2(tiny_video_folder, tmp_path, capsys, make, extra, needle):
    path = tmp_path / "in.png"
    make(path)
    assert main(["animate", str(path), "x", "--model", str(tiny_video_folder), "-o", str(tmp_path / "o.mp4"),
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vidiff animate: error:")
    assert __import__("re").search(needle, err), err


def test_animate_checks_the_image_before_importing_diffusers(tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    code = ("import sys; from vidiff.cli import main; "
            f"rc = main(['animate', {str(tmp_path / 'small.png')!r}, 'x', '-o', 'clip.mp4']); "
            "print(rc, 'diffusers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.stdout.split() == ["2", "False"], result.stderr
