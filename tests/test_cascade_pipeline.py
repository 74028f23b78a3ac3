"""VideoCascadePipeline: the cascade from Python, stage by stage as `vidiff generate` runs it, bit for bit."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from vidiff.io.video import read_video
from vidiff.model_folder import default_model
from vidiff.pipelines.cascade import VideoCascadePipeline
from vidiff.pipelines.interpolate import interpolate
from vidiff.pipelines.upscale import upscale

from test_cascade import cascade  # noqa: F401  (the tiny cascade fixture)

# sha256 of the uint8 frames (61, 128, 128, 3) that `vidiff generate "a red circle moving right" --seed 0
# --threads 1` wrote with the default model before the cascade became a pipeline (commit eec0576, this machine's
# CPU); the thread count changes float sums, so the check pins one thread.
DEFAULT_SEED0_SHA256 = "2937de7086153efe84dcfe9bc6a9f21d42626c12d11a202d29edee4658b587e1"


def sha256(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()


def test_stages_are_named_and_each_stage_pipeline_works_alone(cascade):  # noqa: F811
    import vidiff

    assert vidiff.VideoCascadePipeline is VideoCascadePipeline  # exported lazily, like the other public names
    pipe = VideoCascadePipeline.from_pretrained(cascade)
    assert pipe.stages == ["base", "interpolation", "upscale"]
    assert pipe.interpolation.vae is pipe.base.vae and pipe.upscale.text_encoder is pipe.base.text_encoder
    assert pipe.interpolation.scheduler is not pipe.base.scheduler
    assert VideoCascadePipeline.from_pretrained(cascade, stages=()).stages == ["base"]
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(3)
    out = pipe("a red circle", num_frames=3, height=32, width=32, num_inference_steps=2, generator=generator)
    assert out.frames.dtype == np.uint8 and out.frames.shape == (1, 5, 64, 64, 3)  # (3 - 1) * 2 + 1 frames, 2x
    meta = out.metadata[0]
    assert meta["seed"] == 3 and meta["interpolation"]["factor"] == 2 and meta["upscale"]["scale"] == 2

    # the same clip by hand: the base pipeline, then each stage with the clip's seed
    base = pipe.base("a red circle", num_frames=3, height=32, width=32, num_inference_steps=2,
                     guidance_scale=pipe.guidance_scale, generator=torch.Generator().manual_seed(3),
                     show_progress=False).frames[0]
    steps = {k: v for k, v in meta["interpolation"].items() if k not in ("factor", "seconds")}
    frames = interpolate(pipe.interpolation, base, 2, prompt="a red circle", seed=3, **steps)
    steps = {k: v for k, v in meta["upscale"].items() if k not in ("scale", "seconds")}
    frames = upscale(pipe.upscale, frames, 2, seed=3, **steps)
    np.testing.assert_array_equal(out.frames[0], frames)


def test_none_takes_cascade_json_defaults_and_1_turns_a_stage_off(cascade):  # noqa: F811
    pipe = VideoCascadePipeline.from_pretrained(cascade)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_frames=3, height=32, width=32, num_inference_steps=2)
    off = pipe(["a red circle", "a blue square"], interpolate=1, upscale=1, output_type="pt",
               generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], **kwargs)
    assert off.frames.shape == (2, 3, 3, 32, 32) and off.frames.dtype == torch.float32
    assert [m["seed"] for m in off.metadata] == [1, 2] and "interpolation" not in off.metadata[0]
    base = pipe.base(["a red circle", "a blue square"], guidance_scale=pipe.guidance_scale, show_progress=False,
                     generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], **kwargs).frames
    np.testing.assert_array_equal((off.frames.permute(0, 2, 3, 4, 1) * 255).round().byte().numpy(), base)
    only_up = pipe("a red circle", interpolate=1, generator=torch.Generator().manual_seed(1), **kwargs)
    assert only_up.frames.shape == (1, 3, 64, 64, 3)
    for bad in (dict(interpolate=0), dict(upscale=3), dict(output_type="latent")):
        with pytest.raises(ValueError):
            pipe("a red circle", **kwargs, **bad)
    with pytest.raises(ValueError, match="no interpolation stage"):
        VideoCascadePipeline.from_pretrained(cascade, stages=("upscale",))("a red circle", interpolate=2, **kwargs)


def test_callback_on_step_end_sees_every_base_step_and_can_replace_latents(cascade):  # noqa: F811
    pipe = VideoCascadePipeline.from_pretrained(cascade, stages=())
    pipe.set_progress_bar_config(disable=True)
    seen = []

    def callback(base, step, t, tensors):
        seen.append((step, int(t), tuple(tensors["latents"].shape)))
        return {"latents": torch.zeros_like(tensors["latents"])} if step == 2 else {}

    out = pipe("a red circle", num_frames=2, height=32, width=32, num_inference_steps=3, callback_on_step_end=callback,
               generator=torch.Generator().manual_seed(0))
    assert [s for s, _, _ in seen] == [0, 1, 2] and seen[0][2] == (1, 4, 2, 4, 4)
    zeros = pipe.base.decode_latents(torch.zeros(1, 4, 2, 4, 4))
    from vidiff.pipelines.text_to_video import to_uint8

    np.testing.assert_array_equal(out.frames, to_uint8(zeros))  # the last step's latents were replaced by zeros


@pytest.mark.slow
def test_generate_seed_equals_the_pipeline_with_that_generator_and_the_stored_frames(tmp_path, one_thread):
    """`vidiff generate --seed S` and `pipe(..., generator=torch.Generator().manual_seed(S))` give the same frames,
    and the default model's frames are bit-identical to those stored before the cascade became a pipeline."""
    out = tmp_path / "frames"
    result = subprocess.run([sys.executable, "-m", "vidiff.cli", "generate", "a red circle moving right", "--seed", "0",
                             "--threads", "1", "--no-progress", "-o", f"{out}/"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    cli_frames, _ = read_video(out)
    pipe = VideoCascadePipeline.from_pretrained(default_model())
    pipe.set_progress_bar_config(disable=True)
    frames = pipe("a red circle moving right", generator=torch.Generator().manual_seed(0)).frames[0]
    assert frames.shape == (61, 128, 128, 3)
    np.testing.assert_array_equal(frames, cli_frames)
    assert sha256(frames) == DEFAULT_SEED0_SHA256
