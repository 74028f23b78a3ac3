"""Stage 3 of the tiny default model: shapes clips -> inflate the tiny image model -> `vidiff train`, in two phases.

    python scripts/tiny_default/train_temporal.py --image-model outputs/tiny-default/image-model \\
        --work outputs/tiny-default [--clips 1520] [--resume]

What a user does with a real Stable Diffusion: inflate it, then train on a folder of videos through the public
trainer. Only training combinations are written; held-out ones never are.
  phase 1 (configs/train/tiny_default_temporal.yaml): motion, everything trainable      -> WORK/temporal-a/model
      (the default model until 2026-11-23)
  phase 2, with --text-phase (configs/train/tiny_default_text.yaml): zero-terminal-SNR v-prediction schedule, text
      encoder trainable                                                              -> WORK/temporal-c/model
      (an experiment to make the clip's direction follow the caption; it did not, see README.md)
`--zero-snr` runs phase 1 itself on that schedule (an experiment; it did not work either). `--direction` (the
fourth attempt, README.md; the first whose clips follow the direction word) runs phase 1 on that schedule too, takes
its EMA weights at step 1,500, then trains where the caption alone decides the clip, the noisiest tenth of the
schedule:                                                                            -> WORK/temporal-z/model
  phase b: only there, 500 steps                                                     -> WORK/temporal-b/model
  phase c: three quarters of each batch there, batch 8, lr 3e-4 constant, 1,000 steps -> WORK/temporal-d/model
then, since training at the noisy end made red squares round, over the whole schedule again:
  phase e: timesteps uniform, batch 8, lr 1e-4 constant, 250 steps                    -> WORK/temporal-e/model
      (the shipped default model)
`--resume` continues the phase that was interrupted.
"""

import argparse
import json
import shutil
from pathlib import Path

import torch

from vidiff.config import TrainConfig, load_config
from vidiff.data.shapes import write_shapes_folder
from vidiff.models.inflate_folder import inflate_model_folder
from vidiff.training.checkpoints import checkpoint_dir
from vidiff.training.trainer import checkpoint_model_folder, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
# DDIM settings of phase 2: no signal left at the last timestep, which v-prediction can learn and sample from
ZERO_TERMINAL_SNR = {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
# --direction: phase 1 (2,000-step cosine) is cut at this step, then two phases at the noisiest end of the schedule
# and one over all of it, as overrides of the phase-1 config. At t = 999 the zero-SNR input is pure noise, so only
# the caption can say where the object starts and which way it goes; elsewhere the noisy clip itself shows it
# (measured: README.md).
DIRECTION_PHASE1_STEPS = 1500
DIRECTION_PHASES = (
    ("temporal-b", ["high_noise_fraction=1.0", "max_steps=500"]),
    ("temporal-d", ["high_noise_fraction=0.75", "max_steps=1000", "batch_size=8", "learning_rate=3e-4",
                    "lr_scheduler=constant", "lr_warmup_steps=0"]),
    ("temporal-e", ["high_noise_fraction=0.0", "max_steps=250", "batch_size=8", "learning_rate=1e-4",
                    "lr_scheduler=constant", "lr_warmup_steps=0", "checkpoint_every=125"]),
)


def zero_terminal_snr_copy(model: Path, target: Path) -> Path:
    """A copy of a model folder whose scheduler has zero terminal SNR, v-prediction and trailing timesteps."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model, target)
    path = target / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **ZERO_TERMINAL_SNR}, indent=2) + "\n")
    return target


def run_phase(config_name: str, model: Path, clips: Path, output: Path, resume: bool, overrides: list[str],
              stop_after: int | None = None) -> Path:
    """Train one phase unless its model folder exists; returns that folder. With `stop_after`, the phase ends at
    that step and its model is that checkpoint's EMA weights (the learning-rate schedule stays the full run's)."""
    if (output / "model" / "model_index.json").is_file():
        return output / "model"
    config = load_config(TrainConfig, CONFIGS / config_name,
                         [f"model={model}", f"data={clips}", f"output={output}", *overrides])
    resuming = resume and (output / "checkpoints").is_dir()
    print(train(config, resume=resuming, stop_after=stop_after, overwrite=not resuming))  # else the phase restarts
    if stop_after is not None:
        checkpoint_model_folder(checkpoint_dir(output, stop_after), model, output / "model")
    return output / "model"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-model", required=True)
    parser.add_argument("--work", default="outputs/tiny-default")
    parser.add_argument("--clips", type=int, default=1520, help="training clips to render (20 per combination)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--text-phase", action="store_true", help="also run phase 2 (experimental)")
    parser.add_argument("--zero-snr", action="store_true",
                        help="run phase 1 on the zero-terminal-SNR v-prediction schedule (experimental)")
    parser.add_argument("--direction", action="store_true",
                        help="zero-SNR phase 1 cut at step 1,500, phases b and c at the noisiest end, then phase e "
                             "over the whole schedule (the shipped default)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for both phases, key=value")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)

    clips = work / "clips"
    if not (clips / "done").is_file():
        write_shapes_folder(clips, num_clips=args.clips, num_frames=16, size=64, split="train", seed=1)
        (clips / "done").write_text("ok\n")
    video_model = work / "video-model-init"
    if not (video_model / "model_index.json").is_file():
        inflate_model_folder(args.image_model, video_model, overwrite=True, max_frames=16,
                             temporal_num_attention_heads=8)
    if args.zero_snr or args.direction:  # phase 1 itself on the zero-terminal-SNR v-prediction schedule
        video_model = zero_terminal_snr_copy(video_model, work / "video-model-init-v")
    motion = run_phase("tiny_default_temporal.yaml", video_model, clips, work / ("temporal-z" if args.direction
                       else "temporal-a"), args.resume, args.overrides,
                       stop_after=DIRECTION_PHASE1_STEPS if args.direction else None)
    if args.direction:
        for name, phase in DIRECTION_PHASES:
            motion = run_phase("tiny_default_temporal.yaml", motion, clips, work / name, args.resume,
                               [*phase, *args.overrides])
        return motion
    if not args.text_phase:
        return motion
    switched = zero_terminal_snr_copy(motion, work / "temporal-a-v")
    return run_phase("tiny_default_text.yaml", switched, clips, work / "temporal-c", args.resume, args.overrides)


if __name__ == "__main__":
    print(main())
