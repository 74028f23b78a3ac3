"""Process-wide settings of the `vidiff` program (vidiff.process), each checked in a child process: they change
the interpreter's collector or the C allocator for the rest of the process, which a test session must not inherit."""

import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _child(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


PAGE_FAULTS = """
import ctypes, resource
from vidiff.process import keep_freed_memory

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
SIZE = 64 * 2**20  # above glibc's largest mmap threshold (32 MB)

def faults_per_block():
    counts = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(SIZE)
        libc.memset(block, 1, SIZE)  # the first write to each 4 KiB page of fresh memory faults
        libc.free(block)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sum(counts[1:]) / 3  # after the first block

default = faults_per_block()
changed = keep_freed_memory()
faults_per_block()  # the first block from the heap
print(default, faults_per_block(), changed)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_makes_glibc_reuse_freed_large_blocks():
    default, kept, changed = _child(PAGE_FAULTS).split()
    assert changed == "True"
    assert float(default) > 10_000  # a fresh mapping for every 64 MB block: one fault per page (16,384)
    assert float(kept) < 0.05 * float(default)  # the freed block is reused from the heap


IMPORTS = """
import gc, sys
from vidiff.process import import_quickly

assert "colorsys" not in sys.modules
frozen = gc.get_freeze_count()
import_quickly(["colorsys"])
assert "colorsys" in sys.modules and gc.isenabled()
assert gc.get_freeze_count() > frozen  # what the import created is out of the collector's sight
frozen = gc.get_freeze_count()
import_quickly(["colorsys"])  # already imported: nothing frozen, so no garbage of the caller's is kept alive
assert gc.get_freeze_count() == frozen and gc.isenabled()
gc.disable()
import_quickly(["wave"])
assert not gc.isenabled()  # a caller's paused collector stays paused
print("ok")
"""


def test_import_quickly_imports_restores_the_collector_and_freezes_only_new_imports():
    assert _child(IMPORTS).strip() == "ok"


def test_program_exits_with_the_command_status():
    # run(): main() with the program's settings, then the exit without the last collection; bad input still exits 2
    result = subprocess.run([sys.executable, "-m", "vidiff.cli", "generate", "a red circle", "--fps", "0", "-o",
                             "never.mp4"], capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 2
    assert "--fps 0 must be positive" in result.stderr
    assert "Traceback" not in result.stderr
