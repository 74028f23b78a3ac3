"""The tiny default's VAE recipe (scripts/tiny_default/train_vae.py): a loadable 8x VAE, its scaling factor, resume."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

SCRIPT = Path(__file__).parents[1] / "scripts" / "tiny_default" / "train_vae.py"


@pytest.fixture
def recipe(monkeypatch):
    spec = importlib.util.spec_from_file_location("train_vae", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SCALE_FRAMES", 32)  # fewer frames measured: the test is about the recipe
    monkeypatch.setattr(module, "PSNR_FRAMES", 8)
    return module


def _args(out: Path, steps: int, *extra: str, width: int = 16) -> list[str]:
    return ["--out", str(out), "--steps", str(steps), "--width", str(width), "--batch-size", "2", *extra]


def _state(out: Path) -> dict:
    return json.loads((out.parent / f"{out.name}-checkpoint" / "state.json").read_text())


def test_trains_a_loadable_vae_and_resume_repeats_the_straight_run(recipe, tmp_path, capsys):
    straight, resumed = tmp_path / "straight" / "vae", tmp_path / "resumed" / "vae"
    threads = torch.get_num_threads()

    # 1. Four steps straight; two, then two more resumed from the saved checkpoint
    recipe.main(_args(straight, 4))
    recipe.main(_args(resumed, 2))
    assert _state(resumed)["step"] == 2
    metrics = recipe.main(_args(resumed, 4, "--resume"))
    assert "resuming from" in capsys.readouterr().out
    assert _state(resumed)["step"] == 4
    assert torch.get_num_threads() == threads  # --threads is restored for the caller

    # 2. A standard AutoencoderKL folder: SD's 4-block (8x) layout, with the measured scaling factor
    vae = AutoencoderKL.from_pretrained(resumed)
    assert len(vae.encoder.down_blocks) == 4 and len(vae.decoder.up_blocks) == 4
    assert list(vae.config.block_out_channels) == [8, 16, 16, 16]
    scale = vae.config.scaling_factor
    assert math.isfinite(scale) and scale > 0 and scale != 0.18215
    assert metrics["scaling_factor"] == pytest.approx(scale)
    assert metrics["scaled_latent_std_train"] == pytest.approx(1.0)
    saved = json.loads((resumed.parent / "vae_metrics.json").read_text())
    assert saved["steps"] == 4 and 0 <= saved["colour_accuracy"] <= 1 and saved["heldout_frames"] == 8
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
    assert latents.shape == (1, 4, 8, 8)
    assert not list(resumed.parent.glob(".*"))  # atomic writes left nothing half-built

    # 3. Each step's frames and noise depend only on (seed, step): the resumed weights are the straight run's
    reference = AutoencoderKL.from_pretrained(straight).state_dict()
    for name, value in vae.state_dict().items():
        torch.testing.assert_close(value, reference[name], msg=name)

    # 4. Resuming with another model shape fails before training, naming the value the checkpoint needs
    with pytest.raises(ValueError, match="--width 16"):
        recipe.main(_args(resumed, 6, "--resume", width=32))
