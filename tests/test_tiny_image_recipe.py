"""The tiny default's text-to-image recipe (scripts/tiny_default/train_image.py): a loadable SD folder, resume."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

from vidiff.testing.tiny import make_vae

SCRIPT = Path(__file__).parents[1] / "scripts" / "tiny_default" / "train_image.py"


@pytest.fixture
def recipe(monkeypatch):
    spec = importlib.util.spec_from_file_location("train_image", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "EVAL_INFERENCE_STEPS", 2)  # fewer images and steps: the test is about the recipe
    monkeypatch.setattr(module, "SEEN_IMAGES_PER_PAIR", 1)
    monkeypatch.setattr(module, "HELDOUT_IMAGES_PER_COMBO", 1)
    monkeypatch.setattr(module, "GUIDANCE_SWEEP", (1.5,))
    return module


@pytest.fixture
def vae_folder(tmp_path):
    make_vae(width=16).save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def _args(vae: Path, out: Path, steps: int, *extra: str, width: int = 16) -> list[str]:
    return ["--vae", str(vae), "--out", str(out), "--steps", str(steps), "--width", str(width), "--text-width", "16",
            "--batch-size", "4", "--pool-size", "16", "--checkpoint-every", "1", *extra]


def _state(out: Path) -> dict:
    return json.loads((out.parent / f"{out.name}-checkpoint" / "state.json").read_text())


def test_trains_a_loadable_sd_folder_and_resume_repeats_the_straight_run(recipe, vae_folder, tmp_path, capsys):
    straight, resumed = tmp_path / "straight" / "image-model", tmp_path / "resumed" / "image-model"
    threads = torch.get_num_threads()

    # 1. Three steps straight; two, then one more resumed from the saved checkpoint (the frame pool from its cache)
    recipe.main(_args(vae_folder, straight, 3))
    recipe.main(_args(vae_folder, resumed, 2))
    assert _state(resumed)["step"] == 2
    capsys.readouterr()
    metrics = recipe.main(_args(vae_folder, resumed, 3, "--resume"))
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "at step 2" in printed and "frame pool from" in printed
    assert _state(resumed)["step"] == 3
    assert torch.get_num_threads() == threads  # --threads is restored for the caller

    # 2. A standard StableDiffusionPipeline folder, measured by the pixel judge
    pipe = StableDiffusionPipeline.from_pretrained(resumed)
    assert list(pipe.unet.config.block_out_channels) == [16, 32, 32, 32]
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == 16
    assert pipe.vae.config.scaling_factor == pytest.approx(make_vae(width=16).config.scaling_factor)
    saved = json.loads((resumed.parent / "image_metrics.json").read_text())
    assert saved["steps"] == 3 and saved["seen"]["n"] == 21 and saved["heldout"]["n"] == 8
    assert 0 <= saved["heldout"]["colour_accuracy"] <= 1
    assert saved["guidance_sweep"]["1.5"]["seen"]["n"] == 21
    assert saved["safetensors_bytes"]["total"] == metrics["safetensors_bytes"]["total"] > 0
    assert not list(resumed.parent.glob(".*"))  # atomic writes left nothing half-built

    # 3. Training conditions on exactly the embeddings the pipeline computes for a prompt
    text = "a red circle moving right"
    expected = pipe.encode_prompt(text, "cpu", 1, False)[0]
    ids = recipe.tokenize(pipe.tokenizer, [text])
    torch.testing.assert_close(pipe.text_encoder(ids).last_hidden_state, expected)

    # 4. Each step's draws depend only on (seed, step): the resumed weights are the straight run's
    reference = StableDiffusionPipeline.from_pretrained(straight)
    for name in ("unet", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(reference, name).state_dict()
        for key, value in ours.items():
            torch.testing.assert_close(value, theirs[key], msg=f"{name}.{key}")

    # 5. Resuming with another model shape fails before training, naming the value the checkpoint needs
    with pytest.raises(ValueError, match="--width 16"):
        recipe.main(_args(vae_folder, resumed, 4, "--resume", width=32))


def test_word_loss_reads_colour_shape_and_direction_from_the_caption_end(recipe):
    tokenizer = recipe.make_tokenizer()
    captions = ["", "a red circle moving left", "a white triangle moving down"]
    words = recipe.caption_words(captions)
    assert words.tolist() == [[-1, -1, -1], [0, 0, 0], [6, 2, 3]]

    readouts = recipe.word_readouts(16)
    assert [r.shape for r in readouts] == [(7, 16), (3, 16), (4, 16)]
    basis = torch.cat(readouts)
    torch.testing.assert_close(basis @ basis.T, torch.eye(14), atol=1e-5, rtol=0)  # orthonormal, fixed

    ids = recipe.tokenize(tokenizer, captions)
    eos = tokenizer.eos_token_id

    def along(chosen: list[list[int]], scale: float) -> torch.Tensor:
        """Hidden states (3, 77, 16) pointing along the read-outs of the chosen (colour, shape, direction)."""
        rows = [sum(readouts[k][c] for k, c in enumerate(choice)) for choice in chosen]
        return scale * torch.stack(rows)[:, None].expand(-1, ids.shape[1], -1).clone()

    right = along([[0, 0, 0], [0, 0, 0], [6, 2, 3]], 8.0)
    wrong = along([[0, 0, 0], [0, 0, 1], [6, 2, 0]], 8.0)  # directions swapped
    assert recipe.word_loss(right, ids, words, readouts, eos) < 0.01
    assert recipe.word_loss(wrong, ids, words, readouts, eos) > 5.0

    # a direct float64 computation: the loss counts only tokens from the first end-of-text on, and no empty caption
    hidden = torch.randn(3, ids.shape[1], 16, generator=torch.Generator().manual_seed(0))
    hidden[2, : int((ids[2] == eos).nonzero()[0])] = 1e3  # tokens before the caption's end must not count
    hidden[0] = 1e3  # nor the empty caption
    expected = 0.0
    for caption_index in (1, 2):
        ends = (ids[caption_index] == eos).nonzero()[0, 0]
        for kind, readout in enumerate(readouts):
            logits = hidden[caption_index, ends:].double() @ readout.double().T
            expected += -torch.log_softmax(logits, dim=-1)[:, int(words[caption_index, kind])].sum().item()
    tokens = sum(int(len(ids[i]) - (ids[i] == eos).nonzero()[0, 0]) for i in (1, 2))
    assert recipe.word_loss(hidden, ids, words, readouts, eos).item() == pytest.approx(expected / tokens, rel=1e-5)


def test_init_from_continues_a_model_and_the_word_loss_pulls_direction_words_apart(recipe, vae_folder, tmp_path):
    first = tmp_path / "image-model"
    recipe.main(_args(vae_folder, first, 2))

    def tuned(name: str, weight: str) -> dict:
        """20 steps from `first`; --width is ignored there: the shape is first's."""
        return recipe.main(_args(vae_folder, tmp_path / name, 20, "--init-from", str(first), "--word-loss", weight,
                                 "--lr", "3e-3", "--metrics", str(tmp_path / f"{name}.json"), width=32))

    plain, words = tuned("plain", "0"), tuned("words", "1.0")
    after = StableDiffusionPipeline.from_pretrained(tmp_path / "words")
    assert list(after.unet.config.block_out_channels) == [16, 32, 32, 32]
    assert json.loads((tmp_path / "words.json").read_text())["caption_gaps"] == words["caption_gaps"]
    assert json.loads((tmp_path / "image_metrics.json").read_text())["steps"] == 2  # the first run's metrics stay
    assert words["caption_gaps"] == recipe.caption_gaps(after.text_encoder, after.tokenizer)
    # captions that differ only in direction end up far further apart with the word loss than without it
    assert words["caption_gaps"]["direction"] > 3 * plain["caption_gaps"]["direction"]
    assert words["init_from"] == str(first) and _state(tmp_path / "words")["init_from"] == str(first)

    # resuming checks the continued model too
    with pytest.raises(ValueError, match="--init-from"):
        recipe.main(_args(vae_folder, tmp_path / "words", 21, "--resume", "--word-loss", "1.0", "--lr", "3e-3"))
