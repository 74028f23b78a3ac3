"""Training on a folder of videos: overfitting, bad files, frozen spatial weights, exact resume, NaN guard, 2 processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidiff.cli import main
from vidiff.config import TrainConfig, load_config
from vidiff.data.shapes import caption, render_clip
from vidiff.io.video import write_video
from vidiff.training import trainer
from vidiff.training.trainer import TrainingDiverged, train

TINY = dict(num_frames=4, frame_stride=1, resolution=32, batch_size=1, log_every=1, learning_rate=1e-3)


def _write_clips(folder: Path, count: int, captioned: int):
    folder.mkdir(parents=True, exist_ok=True)
    combos = [("red", "circle", "right"), ("blue", "square", "up"), ("green", "triangle", "left")]
    for i in range(count):
        colour, shape, direction = combos[i % len(combos)]
        write_video(render_clip(colour, shape, direction, num_frames=8, size=48, seed=i), folder / f"clip{i}.mp4", fps=8)
        if i < captioned:
            (folder / f"clip{i}.txt").write_text(caption(colour, shape, direction))


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    _write_clips(folder, count=3, captioned=2)
    return folder


def _config(model, data, output, **overrides) -> TrainConfig:
    return TrainConfig(model=str(model), data=str(data), output=str(output), **{**TINY, **overrides})


def test_loss_on_a_fixed_batch_goes_clearly_down(tiny_video_folder, video_folder):
    from vidiff.data.video_folder import VideoFolderDataset
    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    pipe = TextToVideoPipeline.from_pretrained(tiny_video_folder)
    item = VideoFolderDataset(video_folder, num_frames=4, resolution=32, train=False)[0]
    batch = {"video": item["video"][None], "caption": [item["caption"]]}
    params = trainer.trainable_parameters(pipe.unet, "all")
    optimizer = torch.optim.Adam(params.values(), lr=2e-3)
    losses = []
    for _ in range(20):
        generator = trainer.step_generator(0)  # the same noise and timestep every step: a fixed batch
        loss = trainer._loss(batch, pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer,
                             _ddpm(pipe), generator, 0.0, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


def _ddpm(pipe):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def test_bad_files_are_skipped_counted_and_training_finishes(tiny_video_folder, tmp_path):
    data = tmp_path / "data"
    _write_clips(data, count=2, captioned=1)
    (data / "empty.mp4").write_bytes(b"")
    good = (data / "clip0.mp4").read_bytes()
    (data / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (data / "notes.mp4").write_text("this is not a video")
    out = tmp_path / "run"
    summary = train(_config(tiny_video_folder, data, out, max_steps=3, checkpoint_every=2))
    assert summary["steps"] == 3 and summary["videos"] == 2 and summary["short_videos_strided"] == 0
    assert sorted(Path(s["path"]).name for s in summary["skipped_files"]) == ["empty.mp4", "notes.mp4", "truncated.mp4"]
    assert all(s["reason"] for s in summary["skipped_files"])
    written = json.loads((out / "train_summary.json").read_text())
    assert len(written["skipped_files"]) == 3 and written["frames_per_second"] > 0
    assert (out / "temporal.safetensors").is_file()
    assert sorted(p.name for p in (out / "model").iterdir()) == [
        "model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]
    assert list(out.rglob("events.out.tfevents*")) or not trainer._tracker()  # TensorBoard logs


def test_default_mode_leaves_spatial_weights_bit_identical(tiny_video_folder, video_folder, tmp_path):
    out = tmp_path / "run"
    train(_config(tiny_video_folder, video_folder, out, max_steps=3, checkpoint_every=10))
    before = load_file(tiny_video_folder / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(out / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    spatial = [k for k in before if k.startswith("unet.")]
    temporal = [k for k in before if not k.startswith("unet.") and not k.endswith(".pe")]
    assert spatial and all(torch.equal(before[k], after[k]) for k in spatial)
    assert any(not torch.equal(before[k], after[k]) for k in temporal)


def test_text_encoder_trains_only_when_asked_and_is_saved_and_resumed(tiny_video_folder, video_folder, tmp_path):
    source = load_file(tiny_video_folder / "text_encoder" / "model.safetensors")
    frozen = tmp_path / "frozen"
    train(_config(tiny_video_folder, video_folder, frozen, max_steps=2, checkpoint_every=10))
    kept = load_file(frozen / "model" / "text_encoder" / "model.safetensors")
    assert all(torch.equal(source[k], kept[k]) for k in source)

    settings = dict(max_steps=4, checkpoint_every=2, train_text_encoder=True, ema=True)
    straight = tmp_path / "straight"
    summary = train(_config(tiny_video_folder, video_folder, straight, **settings))
    trained = load_file(straight / "model" / "text_encoder" / "model.safetensors")
    assert summary["train_text_encoder"] and trained.keys() == source.keys()
    assert any(not torch.equal(source[k], trained[k]) for k in source)
    checkpoint = load_file(straight / "checkpoints" / "step-00000004" / "trainable.safetensors")
    assert any(k.startswith(trainer.TEXT_ENCODER_PREFIX) for k in checkpoint)
    # the spatial U-Net stays frozen; the text encoder's state resumes exactly with the rest
    before = load_file(tiny_video_folder / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(straight / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("unet."))
    config = _config(tiny_video_folder, video_folder, tmp_path / "stopped", **settings)
    train(config, stop_after=2)
    train(config, resume=True)
    resumed = load_file(tmp_path / "stopped" / "model" / "text_encoder" / "model.safetensors")
    assert all(torch.equal(trained[k], resumed[k]) for k in trained)


def test_interpolation_task_widens_the_base_model_and_learns_its_masked_inputs(tiny_video_folder, video_folder,
                                                                            tmp_path):
    out = tmp_path / "interp"
    summary = train(_config(tiny_video_folder, video_folder, out, max_steps=3, checkpoint_every=10, task="interpolate",
                            trainable="all", keep_every=[2, 3], extrapolate_fraction=0.5))
    assert summary["steps"] == 3 and torch.isfinite(torch.tensor(summary["final_loss"]))
    config = json.loads((out / "model" / "unet" / "config.json").read_text())
    assert config["spatial_config"]["in_channels"] == 9
    weights = load_file(out / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    assert weights["unet.conv_in.weight"].shape[1] == 9 and weights["unet.conv_in.weight"][:, 4:].abs().sum() > 0
    # an interpolation model trains further as it is; a text-to-video model with other inputs is refused
    train(_config(out / "model", video_folder, tmp_path / "again", max_steps=1, task="interpolate", trainable="all",
                  keep_every=[3]))
    with pytest.raises(ValueError, match="trainable: all"):
        _config(tiny_video_folder, video_folder, out, task="interpolate", keep_every=[2]).check()
    with pytest.raises(ValueError, match="keep_every"):
        _config(tiny_video_folder, video_folder, out, task="interpolate", keep_every=[2, 4],
                trainable="all").check()  # 4 frames
    with pytest.raises(ValueError, match="validation_prompts"):
        _config(tiny_video_folder, video_folder, out, task="interpolate", keep_every=[2], trainable="all",
                validation_prompts=["x"]).check()


def test_known_frame_masks_are_interpolation_or_extrapolation_masks():
    masks = trainer._known_frames(200, 16, [2, 4, 8], 0.25, trainer.step_generator(0))
    interpolating = [m for m in masks if m[-1] or m[2]]  # every k-th frame known: frame 2 or the last among them
    assert all(m[0] for m in masks)
    extrapolating = [m for m in masks if not any(torch.equal(m, interpolation_mask) for interpolation_mask in
                                                 [trainer.interpolation_mask(16, k) for k in (2, 4, 8)])]
    assert all(m[: int(m.sum())].all() and 1 <= m.sum() <= 4 for m in extrapolating)
    assert 0.15 < len(extrapolating) / 200 < 0.35 and interpolating


def test_resume_repeats_the_straight_run_exactly(tiny_video_folder, video_folder, tmp_path):
    settings = dict(max_steps=6, checkpoint_every=3, lr_scheduler="cosine", lr_warmup_steps=2, ema=True,
                    caption_dropout=0.5)
    straight = train(_config(tiny_video_folder, video_folder, tmp_path / "straight", **settings))
    config = _config(tiny_video_folder, video_folder, tmp_path / "stopped", **settings)
    train(config, stop_after=3)  # a run killed right after its step-3 checkpoint
    assert not (tmp_path / "stopped" / "temporal.safetensors").exists()
    resumed = train(config, resume=True)
    assert resumed["resumed_from"].endswith("step-00000003") and resumed["steps"] == 6
    a = load_file(tmp_path / "straight" / "temporal.safetensors")
    b = load_file(tmp_path / "stopped" / "temporal.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight["final_loss"] == resumed["final_loss"]


def test_checkpoints_keep_the_newest_k(tiny_video_folder, video_folder, tmp_path):
    train(_config(tiny_video_folder, video_folder, tmp_path / "run", max_steps=4, checkpoint_every=1,
                  keep_checkpoints=2))
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-00000003", "step-00000004"]


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tiny_video_folder, video_folder,
                                                                          tmp_path, monkeypatch):
    real_loss = trainer._loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(trainer, "_loss", sometimes_nan)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"nan.*step 4.*step-00000002"):
        train(_config(tiny_video_folder, video_folder, out, max_steps=10, checkpoint_every=2))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    assert load_file(out / "checkpoints" / "step-00000002" / "trainable.safetensors")  # complete and readable


def test_all_bad_files_stop_before_training(tiny_video_folder, tmp_path, capsys):
    data = tmp_path / "bad"
    data.mkdir()
    (data / "a.mp4").write_bytes(b"")
    assert main(["train", f"model={tiny_video_folder}", f"data={data}", f"output={tmp_path / 'out'}"]) == 2
    assert "no readable videos" in capsys.readouterr().err


def test_config_file_overrides_and_unknown_keys(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\ndata: d\nmax_steps: 7\nlearning_rate: 1.0e-3\n")
    config = load_config(TrainConfig, path, ["max_steps=9", "num_frames=8", "resolution=64", "batch_size=2",
                                             "checkpoint_every=3", "seed=4", "output=o"])
    assert (config.max_steps, config.num_frames, config.resolution, config.batch_size) == (9, 8, 64, 2)
    assert (config.checkpoint_every, config.seed, config.output, config.learning_rate) == (3, 4, "o", 1e-3)
    assert main(["train", "--config", str(path), "max_stepz=3"]) == 2
    assert "max_stepz" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "trainable=everything"]) == 2
    assert "trainable" in capsys.readouterr().err


def test_shipped_config_loads():
    config = load_config(TrainConfig, Path(__file__).parent.parent / "configs" / "train" / "temporal.yaml",
                         ["model=m", "data=d"])
    config.check()
    assert config.trainable == "temporal"


@pytest.mark.parametrize("name", ["tiny_default_temporal.yaml", "tiny_default_text.yaml",
                                  "tiny_default_interpolate.yaml", "tiny_default_upscale.yaml"])
def test_tiny_default_configs_load(name):
    config = load_config(TrainConfig, Path(__file__).parent.parent / "configs" / "train" / name, ["model=m", "data=d"])
    config.check()
    assert config.trainable == "all" and config.train_text_encoder == (name == "tiny_default_text.yaml")
    assert config.task == {"tiny_default_interpolate.yaml": "interpolate",
                           "tiny_default_upscale.yaml": "upscale"}.get(name, "generate")


def test_conv_in_lr_scale_speeds_up_only_conv_in(tiny_video_folder, video_folder, tmp_path):
    """The zero-initialised condition inputs move lr_scale times further per step; the rest at the base rate."""
    moved = {}
    for scale in (1.0, 10.0):
        out = tmp_path / f"x{scale}"
        train(_config(tiny_video_folder, video_folder, out, max_steps=1, task="interpolate", trainable="all",
                      keep_every=[2], conv_in_lr_scale=scale, learning_rate=1e-4, ema=False))
        weights = load_file(out / "model" / "unet" / "diffusion_pytorch_model.safetensors")
        moved[scale] = (weights["unet.conv_in.weight"][:, 4:].abs().mean().item(),
                        weights["unet.conv_out.weight"].clone())
    assert moved[10.0][0] > 5 * moved[1.0][0] > 0
    torch.testing.assert_close(moved[10.0][1], moved[1.0][1])  # conv_out: same rate and gradient, same step
    with pytest.raises(ValueError, match="conv_in_lr_scale"):
        _config(tiny_video_folder, video_folder, tmp_path, conv_in_lr_scale=0).check()


def test_upscale_task_trains_an_upscaler_from_degraded_clips_and_saves_an_upscale_pipeline(video_folder, tmp_path):
    """A 2x upscaler sharing nothing with the base: x4-upscaler layout, 8x VAE, low-res folded by 4 (52 inputs)."""
    from vidiff.models.inflate_folder import inflate_model_folder
    from vidiff.pipelines.upscale import UpscalePipeline
    from vidiff.testing.tiny import make_tiny_upscaler, make_vae

    image = make_tiny_upscaler(tmp_path / "x2", in_channels=52, vae=make_vae())
    video = inflate_model_folder(image, tmp_path / "x2-video", max_frames=8)
    out = tmp_path / "run"
    for cache in (False, True):
        summary = train(_config(video, video_folder, out, max_steps=2, task="upscale", trainable="all",
                                cache_latents=cache, lowres_blur_max=1.0, lowres_noise_max=100, caption_dropout=1.0,
                                resolution=64), overwrite=True)  # the second run replaces the first
        assert summary["steps"] == 2 and torch.isfinite(torch.tensor(summary["final_loss"]))
    index = json.loads((out / "model" / "model_index.json").read_text())
    assert index["_class_name"] == "UpscalePipeline" and (out / "model" / "low_res_scheduler").is_dir()
    pipe = UpscalePipeline.from_pretrained(out / "model")
    assert pipe.scale == 2 and pipe.fold == 4
    trained = load_file(out / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    initial = load_file(video / "unet" / "diffusion_pytorch_model.safetensors")
    assert not torch.equal(trained["unet.conv_in.weight"], initial["unet.conv_in.weight"])
    with pytest.raises(ValueError, match="validation_prompts"):
        _config(video, video_folder, out, task="upscale", validation_prompts=["x"]).check()


def test_latent_cache_holds_clips_in_c_f_h_w_and_trains(tiny_video_folder, video_folder, tmp_path):
    from vidiff.data.video_folder import VideoFolderDataset
    from vidiff.pipelines.text_to_video import TextToVideoPipeline

    vae = TextToVideoPipeline.from_pretrained(tiny_video_folder).vae
    fixed = VideoFolderDataset(video_folder, num_frames=3, resolution=32, train=False)
    with torch.no_grad():
        cache = trainer.LatentCache(fixed, vae, torch.device("cpu"))
        frames = fixed[1]["video"].permute(1, 0, 2, 3)  # (f, c, h, w)
        expected = vae.encode(frames).latent_dist.mean.permute(1, 0, 2, 3)
    assert cache[1]["mean"].shape == (4, 3, 4, 4)  # c f h w, with f != c so a transposed layout cannot pass
    torch.testing.assert_close(cache[1]["mean"], expected)
    summary = train(_config(tiny_video_folder, video_folder, tmp_path / "run", max_steps=2, cache_latents=True,
                            num_frames=3))
    assert summary["latent_cache"] and summary["steps"] == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_completes_and_only_the_main_process_checkpoints(tiny_video_folder, video_folder,
                                                                              tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "vidiff.cli", "train",
               f"model={tiny_video_folder}", f"data={video_folder}", f"output={out}", "max_steps=4",
               "checkpoint_every=2", "num_frames=4", "frame_stride=1", "resolution=32"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["step-00000002", "step-00000004"]
    assert all(json.loads((p / "state.json").read_text())["written_by_rank"] == 0 for p in checkpoints)
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 4


def test_validation_clips_are_written_as_gifs(tiny_video_folder, video_folder, tmp_path):
    from vidiff.io.video import read_video

    out = tmp_path / "run"
    train(_config(tiny_video_folder, video_folder, out, max_steps=2, validation_every=2, validation_steps=2,
                  validation_prompts=["a red circle moving right"], validation_seeds=[0, 1]))
    gifs = sorted((out / "validation").glob("*.gif"))
    assert [g.name for g in gifs][:2] == ["step-00000002-00-seed0.gif", "step-00000002-00-seed1.gif"]
    frames, _ = read_video(gifs[0])
    assert frames.shape == (4, 32, 32, 3)


def test_high_noise_fraction_moves_that_share_of_timesteps_into_the_noisiest_tenth():
    uniform = trainer._timesteps(1000, 4000, 0.0, trainer.step_generator(0))
    assert torch.equal(uniform, torch.randint(0, 1000, (4000,), generator=trainer.step_generator(0)))
    assert 0.08 < (uniform >= 900).float().mean() < 0.12
    biased = trainer._timesteps(1000, 4000, 0.5, trainer.step_generator(0))
    assert 0.5 < (biased >= 900).float().mean() < 0.6 and biased.min() >= 0 and biased.max() <= 999
    with pytest.raises(ValueError, match="high_noise_fraction"):
        TrainConfig(model="m", data="d", high_noise_fraction=1.5).check()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_the_objective_follows_the_scheduler_prediction_type(prediction_type, monkeypatch):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(prediction_type=prediction_type)
    latents_dist = {"mean": torch.randn(2, 4, 3, 4, 4), "std": torch.full((2, 4, 3, 4, 4), 0.1)}

    class ZeroUNet(torch.nn.Module):
        def forward(self, x, t, text):
            return type("Out", (), {"sample": torch.zeros_like(x)})()

    class FakeVAE:
        config = type("C", (), {"scaling_factor": 1.0})()

    batch = {**latents_dist, "caption": ["a", "b"]}
    monkeypatch.setattr(trainer, "_encode", lambda *args: torch.zeros(2, 77, 8))
    loss = trainer._loss(batch, ZeroUNet(), FakeVAE(), None, None, scheduler, trainer.step_generator(0), 0.0,
                         torch.device("cpu"))
    # replay the same draws to build the expected target
    generator = trainer.step_generator(0)
    latents = batch["mean"] + batch["std"] * torch.randn(batch["mean"].shape, generator=generator)
    torch.rand(2, generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (2,), generator=generator)
    target = {"epsilon": noise, "v_prediction": scheduler.get_velocity(latents, noise, timesteps),
              "sample": latents}[prediction_type]
    torch.testing.assert_close(loss, target.square().mean())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_velocity_loss_weighting_equals_the_mse_of_the_implied_v(prediction_type, monkeypatch):
    """Whatever the model predicts, loss_weighting=velocity gives the MSE between the v it implies and the true v
    (computed here in float64 from the same draws)."""
    from diffusers import DDPMScheduler

    from vidiff.testing.tiny import make_scheduler

    scheduler = DDPMScheduler.from_config(make_scheduler().config, prediction_type=prediction_type)  # SD's betas
    batch = {"mean": torch.randn(8, 4, 3, 4, 4), "std": torch.full((8, 4, 3, 4, 4), 0.1), "caption": ["a"] * 8}
    prediction = torch.randn(8, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1))

    class FixedUNet(torch.nn.Module):
        def forward(self, x, t, text):
            return type("Out", (), {"sample": prediction})()

    class FakeVAE:
        config = type("C", (), {"scaling_factor": 1.0})()

    monkeypatch.setattr(trainer, "_encode", lambda *args: torch.zeros(8, 77, 8))
    loss = trainer._loss(batch, FixedUNet(), FakeVAE(), None, None, scheduler, trainer.step_generator(0), 0.0,
                         torch.device("cpu"), loss_weighting="velocity")

    generator = trainer.step_generator(0)
    x0 = (batch["mean"] + batch["std"] * torch.randn(batch["mean"].shape, generator=generator)).double()
    torch.rand(8, generator=generator)
    noise = torch.randn(x0.shape, generator=generator).double()
    timesteps = torch.randint(0, 1000, (8,), generator=generator)
    a = scheduler.alphas_cumprod[timesteps].double().view(-1, 1, 1, 1, 1)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
    guess = prediction.double()
    if prediction_type == "epsilon":
        x0_guess = (noisy - (1 - a).sqrt() * guess) / a.sqrt()
        v_guess = a.sqrt() * guess - (1 - a).sqrt() * x0_guess
    elif prediction_type == "sample":
        noise_guess = (noisy - a.sqrt() * guess) / (1 - a).sqrt()
        v_guess = a.sqrt() * noise_guess - (1 - a).sqrt() * guess
    else:
        v_guess = guess
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    expected = (v_guess - v).square().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    plain = trainer._loss(batch, FixedUNet(), FakeVAE(), None, None, scheduler, trainer.step_generator(0), 0.0,
                          torch.device("cpu"))
    if prediction_type == "epsilon":  # the noisy steps weigh far more than in the plain MSE
        assert loss > 2 * plain
    with pytest.raises(ValueError, match="loss_weighting"):
        TrainConfig(model="m", data="d", loss_weighting="snr").check()
