#!/usr/bin/env bash
# Every GPU figure in BENCHMARKS.md, in one go: ceilings, CUDA correctness guards, sampling and training benchmarks.
# Usage: bash scripts/gpu_bench.sh OUTDIR [extra bench.py arguments]
# Needs torch with CUDA, diffusers and transformers; vidiff from this checkout (PYTHONPATH or pip install -e .).
set -uo pipefail
out=${1:?output folder}; shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"
[ -n "${SKIP_CEILINGS:-}" ] || timeout 90 python3 scripts/gpu_ceilings.py --json "$out/ceilings.json" 2>&1 | tail -40
TORCH_LOGS=recompiles timeout 380 python3 scripts/bench.py --size sd15 --device cuda --dtype bf16 --frames 16 --height 512 --width 512 \
    --steps 25 --repeats 5 --compile --json "$out/bench.json" "$@" 2>&1 | grep -v "should be kept in float32" \
    | tee "$out/bench.log" | tail -14
timeout 180 python3 scripts/bench_train.py --sd15 --frames 16 --size 512 --batch 1 --steps 5 \
    --json "$out/train.json" 2>&1 | tee "$out/train.log" | tail -8
timeout ${PYTEST_TIMEOUT:-120} python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_video_unet.py 2>&1 | tail -15
