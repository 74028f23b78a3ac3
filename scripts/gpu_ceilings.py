"""The GPU's two ceilings and the attention kernels at the U-Net's shapes, measured before the benchmarks.

- bf16 matrix-multiply throughput: 8192^3 products on random data (TFLOP/s), the reference for "the U-Net step at
  >= 50 % of the bf16 matmul throughput";
- device-to-device copy bandwidth (bytes read + written);
- each SDPA backend (flash, memory-efficient, cuDNN, math) on SD 1.5's spatial self-attention at 64x64 latents
  and on the temporal attention's short frame sequences, 16 frames x 2 (guidance) clips, bf16.

Times are medians of CUDA-event timings after a warm-up, rotating among input sets larger than the L2 cache.

    python scripts/gpu_ceilings.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, inputs: list, repeats: int = 20, warmup: int = 3) -> float:
    for i in range(warmup):
        fn(*inputs[i % len(inputs)])
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*inputs[i % len(inputs)])
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def matmul_tflops(n: int = 8192) -> float:
    inputs = [(torch.randn(n, n, device="cuda", dtype=torch.bfloat16),
               torch.randn(n, n, device="cuda", dtype=torch.bfloat16)) for _ in range(3)]
    ms = median_ms(torch.mm, inputs)
    return 2 * n**3 / (ms / 1e3) / 1e12


def copy_tb_per_s(numel: int = 2**30) -> float:
    src, dst = torch.randn(numel, device="cuda", dtype=torch.bfloat16), torch.empty(numel, device="cuda",
                                                                                   dtype=torch.bfloat16)
    ms = median_ms(lambda a, b: b.copy_(a), [(src, dst)])
    return 2 * numel * 2 / (ms / 1e3) / 1e12


ATTENTION_SHAPES = {  # (batch, heads, tokens, head dim): SD 1.5 at 512x512, 16 frames, guidance batch of 2
    "spatial 64x64, 320 ch": (32, 8, 4096, 40),
    "spatial 32x32, 640 ch": (32, 8, 1024, 80),
    "temporal 64x64, 320 ch": (2 * 4096, 8, 16, 40),
    "temporal 32x32, 640 ch": (2 * 1024, 8, 16, 80),
}
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def attention_table() -> dict:
    rows = {}
    for name, (b, h, n, d) in ATTENTION_SHAPES.items():
        inputs = [tuple(torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                  for _ in range(2)]
        reference = F.scaled_dot_product_attention(*[t[:2].double() for t in inputs[0]])  # 2 of the batch
        rows[name] = {}
        for backend, kind in BACKENDS.items():
            try:
                with sdpa_kernel(kind):
                    out = F.scaled_dot_product_attention(*inputs[0])
                    ms = median_ms(F.scaled_dot_product_attention, inputs)
            except RuntimeError as error:  # this backend does not take this shape
                rows[name][backend] = f"unsupported: {str(error).splitlines()[0][:80]}"
                continue
            entry = {"ms": round(ms, 3), "tflops": round(4 * b * h * n * n * d / (ms / 1e3) / 1e12, 1)}
            entry["rel_error"] = float((out[:2].double() - reference).norm() / reference.norm())
            rows[name][backend] = entry
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "bf16_matmul_tflops": round(matmul_tflops(), 1), "copy_tb_per_s": round(copy_tb_per_s(), 2),
               "attention": attention_table()}
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
