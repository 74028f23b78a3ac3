#!/usr/bin/env bash
# The tiny default model from nothing, every stage in order, each skipped when its output already exists:
#
#   bash scripts/tiny_default/make_all.sh [WORK] [STAGE ...]      # WORK defaults to outputs/tiny-default
#   DEVICE=cuda bash scripts/tiny_default/make_all.sh             # the same recipe on a GPU
#
# Stages: vae, image, image-words (the image model continued with the caption-word loss), temporal-direction (inflated
# on the zero-SNR schedule, phase 1 cut at step 1,500, phases at the noisiest end of the schedule, then 250 steps over
# all of it), eval (all five when none is named), and ship (copies the trained model into the package as the default;
# named explicitly); then interpolation (trains the masked-frame stage from the shipped default), ship-interpolation
# (adds it to the default's cascade.json) and interpolation-eval; then clips128 (the 128-pixel shapes clips), upscale
# (makes and trains the 2x super-resolution stage), ship-upscale and upscale-eval. temporal (named explicitly) is the
# first recipe, on the image model without caption words: the default shipped until 2026-11-23, whose motion ignored
# the direction word. The shipped interpolation and upscale stages were trained from that earlier default and keep its
# text encoder and scheduler (ship.py); rerun after the new default is shipped, the interpolation stage starts from
# the new one instead.
# Seeds are fixed in each stage's script, so a rerun on the same device
# repeats the run. Killed stages continue where they stopped (each resumes from its newest checkpoint).
# Measured: on one H200, VAE 146 s, image model 362 s, the first recipe's temporal phase ~280 s. On the 2-core CPU
# (1 thread), VAE 37 min and image model 44 min in an earlier session; image-words 878 s, and the four
# temporal-direction phases ~17 min, 450 s, 1,219 s and 211 s (2 threads), run one at a time, not chained; eval
# 22 min plus 16 min for its baseline. scripts/tiny_default/README.md has the details.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-outputs/tiny-default}
shift || true
stages=${*:-vae image image-words temporal-direction eval}
device=${DEVICE:-cpu}
python=${PYTHON:-python}
mkdir -p "$work"

for stage in $stages; do
  case $stage in
    vae)
      [ -f "$work/vae/config.json" ] || "$python" scripts/tiny_default/train_vae.py --out "$work/vae" \
        --steps 3300 --width 32 --seed 0 --device "$device" --resume ;;
    image)
      [ -f "$work/image-model/model_index.json" ] || "$python" scripts/tiny_default/train_image.py \
        --vae "$work/vae" --out "$work/image-model" --steps 4800 --seed 0 --width 32 --device "$device" --resume ;;
    image-words)  # the image model continued with the caption-word loss
      [ -f "$work/image-words/model_index.json" ] || "$python" scripts/tiny_default/train_image.py \
        --init-from "$work/image-model" --vae "$work/vae" --out "$work/image-words" \
        --metrics "$work/image-words_metrics.json" --steps 1000 --lr 3e-4 --word-loss 0.01 --seed 0 \
        --device "$device" --resume ;;
    temporal-direction)  # needs image-words: the fourth direction attempt, the shipped default
      [ -f "$work/temporal-e/model/model_index.json" ] || "$python" scripts/tiny_default/train_temporal.py \
        --image-model "$work/image-words" --work "$work" --direction --threads 2 --resume ;;
    temporal)  # the first recipe (named explicitly), the default until 2026-11-23
      [ -f "$work/temporal-a/model/model_index.json" ] || "$python" scripts/tiny_default/train_temporal.py \
        --image-model "$work/image-model" --work "$work" --resume ;;
    eval)
      # the image model is best at low guidance (README of this folder); the video model is judged the same way
      "$python" -m vidiff.cli eval --model "$work/temporal-e/model" --baseline "$work/image-words" \
        --guidance 1.5 --clips-per-combo 8 --device "$device" --out "$work/eval" --overwrite --no-progress ;;
    ship)
      "$python" scripts/tiny_default/ship.py "$work/temporal-e/model" --guidance 1.5 --eval "$work/eval/eval.json" \
        --note "scripts/tiny_default/make_all.sh, temporal-direction (train_temporal.py --direction)" ;;
    interpolation)
      resume=$([ -d "$work/interp/checkpoints" ] && echo --resume || echo --overwrite)
      [ -f "$work/interp/model/model_index.json" ] || "$python" -m vidiff.cli train \
        --config configs/train/tiny_default_interpolate.yaml model=vidiff/assets/default-model data="$work/clips" \
        output="$work/interp" $resume ;;
    ship-interpolation)
      "$python" scripts/tiny_default/ship_stage.py interpolation "$work/interp/model" --factor 4 \
        --sampling '{"init": "blend", "strength": 0.4, "steps": 10}' --note "scripts/tiny_default/make_all.sh interpolation" ;;
    interpolation-eval)  # the shipped stage against repetition, blending and Farneback (docs/interpolation-eval)
      "$python" scripts/eval_interpolation.py --clips-per-combo 4 --out docs/interpolation-eval ;;
    clips128)  # 394 lossless (.mkv) training clips at 128 pixels for the upscaler (held-out combinations excluded)
      [ -f "$work/clips128-lossless/clip_00393.txt" ] || "$python" -c "import sys; from vidiff.data.shapes import \
write_shapes_folder; write_shapes_folder(sys.argv[1], 394, size=128, seed=2, ext='.mkv')" "$work/clips128-lossless" ;;
    upscale)
      [ -f "$work/upscaler-init/model_index.json" ] || "$python" scripts/tiny_default/make_upscaler.py --codec 2 \
        --widths 32 48 64 --out "$work/upscaler-init"
      resume=$([ -d "$work/upscale/checkpoints" ] && echo --resume || echo --overwrite)
      [ -f "$work/upscale/model/model_index.json" ] || "$python" -m vidiff.cli train \
        --config configs/train/tiny_default_upscale.yaml model="$work/upscaler-init" data="$work/clips128-lossless" \
        output="$work/upscale" $resume ;;
    ship-upscale)
      "$python" scripts/tiny_default/ship_stage.py upscale "$work/upscale/model" --scale 2 \
        --sampling '{"steps": 1, "noise_level": 0}' --note "scripts/tiny_default/make_all.sh upscale" ;;
    upscale-eval)  # the shipped stage against bicubic and independent noise (docs/upscale-eval)
      "$python" scripts/eval_upscale.py --clips-per-combo 4 --out docs/upscale-eval ;;
    *)
      echo "unknown stage '$stage': use vae image image-words temporal temporal-direction eval ship interpolation ship-interpolation" \
        "interpolation-eval clips128 upscale ship-upscale upscale-eval" >&2
      exit 2 ;;
  esac
done
