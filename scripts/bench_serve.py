"""Wall time of `vidiff serve` requests against `vidiff generate` for the same clip, and the idle server's memory.

Rounds, interleaved so that both sides meet the same machine: start a server (not timed), time its first and second
request through gradio_client (`Client(url).predict(PROMPT, seed=SEED, api_name="/generate")`, every other input at
the model's default), note its resident memory idle before and after them, stop it; then time
`vidiff generate PROMPT -o x.mp4 --seed SEED` as a process, imports and loading included. Both sides get the same
--threads. Reported: medians over the rounds, and every measurement; `*_sampling_s` are the seconds each clip's
sidecar records for the base model and the stages (the rest of a wall time is imports, loading, encoding, HTTP).

    python scripts/bench_serve.py --rounds 5 --threads 1          # the shipped cascade's defaults: README's figures
    python scripts/bench_serve.py --rounds 1 --quick              # 4 frames, 2 steps, no stages: a check in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidiff.testing.server import REPO, serve  # noqa: E402

PROMPT = "a red circle moving right"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def served(folder: Path, seed: int, threads: int, extra: dict) -> dict:
    from gradio_client import Client

    with serve("--threads", str(threads), "--output-dir", str(folder / "served"), cwd=folder) as server:
        time.sleep(2)  # let start-up settle before reading memory
        record = {"idle_mb": rss_mb(server.process.pid)}
        client = Client(server.url, verbose=False)
        for name in ("first", "second"):
            start = time.perf_counter()
            outputs = client.predict(PROMPT, seed=seed, **extra, api_name="/generate")
            record[f"{name}_s"] = time.perf_counter() - start
            record[f"{name}_sampling_s"] = sampling_s(outputs[2])
        time.sleep(2)
        record["idle_after_mb"] = rss_mb(server.process.pid)
    return record


def sampling_s(sidecar: str | Path) -> float:
    """The seconds the clip's sidecar records for the base model and the later stages."""
    timings = json.loads(Path(sidecar).read_text())["timings"]
    return timings["sample_s"] + timings.get("stages_s", 0)


def command_line(folder: Path, seed: int, threads: int, extra: dict) -> tuple[float, float]:
    """(wall seconds of `vidiff generate`, the seconds its sidecar records for sampling)."""
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in extra.items()]  # generate's names
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidiff.cli", "generate", PROMPT, "-o", str(folder / f"cli-{seed}.mp4"),
                    "--seed", str(seed), "--threads", str(threads), "--no-progress", *flags], check=True, env=env,
                   cwd=folder, capture_output=True)
    return time.perf_counter() - start, sampling_s(folder / f"cli-{seed}.mp4.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="4 frames, 2 steps, no interpolation or upscaling")
    args = parser.parse_args()
    extra = {"num_frames": 4, "steps": 2, "interpolate": 1, "upscale": 1} if args.quick else {}
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            folder = Path(tmp) / str(index)
            folder.mkdir()
            record = served(folder, index, args.threads, extra)
            record["cli_s"], record["cli_sampling_s"] = command_line(folder, index, args.threads, extra)
            rounds.append(record)
            print(json.dumps({key: round(value, 2) for key, value in record.items()}), flush=True)
    medians = {key: round(statistics.median(r[key] for r in rounds), 2) for key in rounds[0]}
    print(json.dumps({"medians": medians, "rounds": len(rounds), "threads": args.threads, "extra": extra,
                      "cpus": os.cpu_count(), "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
