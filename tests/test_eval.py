"""`vidiff eval`: the judge scores rendered clips perfectly, a model's and an image baseline's clips are generated
and judged for every combination of a split, seeds fix the result, reports are written, bad input is one line."""

import json

import pytest

from vidiff.cli import main
from vidiff.data.shapes import HELD_OUT, caption
from vidiff.eval import run
from vidiff.eval.run import evaluate_ground_truth, evaluate_image_baseline, evaluate_model, write_report

TINY = dict(clips_per_combo=1, split="heldout", num_frames=4, steps=2, progress=False, device="cpu")
HELD_OUT_CAPTIONS = sorted(caption(*combo) for combo in HELD_OUT)
METRICS = ("colour", "shape", "direction", "all", "single_object")


@pytest.fixture(scope="module")
def tiny_result(tiny_video_folder):
    return evaluate_model(tiny_video_folder, **TINY)


def test_ground_truth_scores_everything_right():
    result = evaluate_ground_truth(clips_per_combo=1, split="heldout", num_frames=8, size=48, progress=False)
    assert result["summary"]["heldout"]["n"] == 8 and result["summary"]["seen"]["n"] == 0
    for metric in METRICS:
        assert result["summary"]["all"][metric] == 1.0, metric
    assert all(row["heldout"] and row["all"] == 1.0 for row in result["per_combo"])


def test_model_is_judged_on_exactly_the_split_and_the_report_is_written(tiny_result, tiny_video_folder, tmp_path):
    assert sorted(row["caption"] for row in tiny_result["per_combo"]) == HELD_OUT_CAPTIONS
    assert all(row["heldout"] and row["n"] == 1 for row in tiny_result["per_combo"])
    summary = tiny_result["summary"]
    assert summary["heldout"]["n"] == summary["all"]["n"] == 8 and summary["seen"]["n"] == 0
    assert all(0.0 <= summary["all"][metric] <= 1.0 for metric in METRICS)
    assert tiny_result["model"] == str(tiny_video_folder)
    assert tiny_result["settings"]["num_frames"] == 4 and tiny_result["settings"]["size"] == 64

    json_path, md_path = write_report(tiny_result, tmp_path / "report")
    assert json.loads(json_path.read_text())["summary"] == summary
    markdown = md_path.read_text()
    assert "| held-out | 8 |" in markdown and str(tiny_video_folder) in markdown
    assert all(text in markdown for text in HELD_OUT_CAPTIONS)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["eval.json", "eval.md"]  # no temp files


def test_same_seed_gives_the_same_result_at_any_batch_size(tiny_result, tiny_video_folder):
    again = evaluate_model(tiny_video_folder, **{**TINY, "batch_size": 3})  # batching does not move the noise
    assert again["summary"] == tiny_result["summary"]
    assert [row["read"] for row in again["per_combo"]] == [row["read"] for row in tiny_result["per_combo"]]


def test_image_baseline_samples_every_frame_on_its_own(tiny_sd_folder, monkeypatch, tmp_path, tiny_result):
    clips = []

    def spy(frames, text):
        clips.append((frames.copy(), text))
        return judge_clip(frames, text)

    from vidiff.eval.judge import judge_clip

    monkeypatch.setattr(run, "judge_clip", spy)
    options = {**TINY, "num_frames": 3, "split": "train", "batch_size": 2}
    monkeypatch.setattr(run, "combinations", lambda split: [("red", "circle", "right"), ("blue", "square", "up")])
    baseline = evaluate_image_baseline(tiny_sd_folder, **options)
    assert [text for _, text in clips] == ["a red circle moving right", "a blue square moving up"]
    assert all(frames.shape == (3, 64, 64, 3) and frames.dtype.name == "uint8" for frames, _ in clips)
    assert all((frames[0] != frames[1]).any() for frames, _ in clips)  # own noise per frame
    assert baseline["summary"]["all"]["n"] == 2

    markdown = write_report(tiny_result, tmp_path, baseline=baseline)[1].read_text()
    assert "## Baseline" in markdown and str(tiny_sd_folder) in markdown
    assert json.loads((tmp_path / "eval.json").read_text())["baseline"]["model"] == str(tiny_sd_folder)


def test_cli_ground_truth_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["eval", "--ground-truth", "--split", "heldout", "--clips-per-combo", "1", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    assert "| held-out | 8 | 100.0 % | 100.0 % | 100.0 % | 100.0 % |" in capsys.readouterr().out
    assert (out / "eval.md").is_file() and json.loads((out / "eval.json").read_text())["kind"] == "ground truth"
    # an earlier report is kept unless --overwrite (issue 22)
    (out / "eval.json").write_text('{"an": "earlier report"}')
    assert main(argv) == 2
    assert "eval.json already exists" in capsys.readouterr().err
    assert json.loads((out / "eval.json").read_text()) == {"an": "earlier report"}
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "eval.json").read_text())["kind"] == "ground truth"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "{tmp}/missing"], "not found"),
        (["--clips-per-combo", "0"], "clips_per_combo=0"),
        (["--split", "nope"], "unknown split 'nope'"),
        (["--frames", "99"], "num_frames=99 is outside 1..16"),
        (["--steps", "0"], "steps=0"),
        (["--baseline", "{video}"], "not an image model"),
        (["--device", "nope"], "unknown device"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args, needle, tiny_video_folder, tmp_path, capsys, monkeypatch):
    loaded = []
    monkeypatch.setattr(run, "evaluate_model", lambda *a, **k: loaded.append(a))  # nothing may load or run
    args = [a.format(tmp=tmp_path, video=tiny_video_folder) for a in args]
    model = [] if "--model" in args else ["--model", str(tiny_video_folder)]
    assert main(["eval", *model, *args, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("vidiff eval: error:") and needle in err, err
    assert not loaded and not (tmp_path / "report").exists()
