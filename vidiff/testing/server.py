"""A `vidiff serve` process for tests: started on a free port, its URL read from its first line, stopped after."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout this vidiff is imported from
URL_LINE = re.compile(r"vidiff serve: running on (http://\S+)")


@dataclass
class Server:
    process: subprocess.Popen
    url: str  # ends with "/"
    log: Path  # the server's stderr

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


@contextmanager
def serve(*args: str, cwd: Path, start_timeout: float = 300):
    """Run `vidiff serve --port 0 ARGS` in `cwd` with this checkout's vidiff; yield a `Server` once it answers."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = Path(cwd) / "serve.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "vidiff.cli", "serve", "--port", "0", *args], cwd=cwd,
                                   env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=read, daemon=True).start()
    try:
        url = _wait_for_url(lines, start_timeout)
        if url is None:
            raise RuntimeError(f"vidiff serve did not start (exit code {process.poll()}):\n{log.read_text()}")
        yield Server(process, url, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_url(lines: queue.Queue, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if line is None:
            return None
        match = URL_LINE.search(line)
        if match:
            return match.group(1)
