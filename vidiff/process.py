"""Process-wide settings for the `vidiff` program: Python's cycle collector at start and exit, and the C allocator.

None of this changes a result; it only makes short command-line runs on the CPU faster. Measurements are in
README.md ("The two commands").
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def import_quickly(modules: list[str]) -> None:
    """Import `modules` (torch, diffusers, transformers behind them) with the cycle collector paused, then freeze
    what the imports created.

    Those imports allocate millions of long-lived objects, and the collector, triggered again and again while they
    are created, walks all of them each time: pausing it took the imports `vidiff generate` needs from 9.2 s to
    7.2 s (medians of five processes each, interleaved, 2-core CPU). Freezing moves the objects out of the
    collector's sight (`gc.freeze`), so the collections that sampling triggers later do not walk them either.
    Nothing is frozen when the modules were already imported (as in a test session), so an earlier caller's
    garbage is never kept alive.
    """
    missing = [name for name in modules if name not in sys.modules]
    if not missing:
        return
    collecting = gc.isenabled()
    gc.disable()
    try:
        for name in missing:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def skip_exit_collection() -> None:
    """Freeze every object before the interpreter exits, so its last collection has nothing to walk.

    With torch, diffusers and transformers imported that collection took 1.3-1.9 s on the 2-core CPU. Files are
    unaffected: vidiff closes and renames its outputs before returning, and `atexit` handlers still run.
    """
    gc.freeze()


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and keep freed memory there, instead of mapping fresh pages
    from the kernel for every block above its mmap threshold (at most 32 MB) and unmapping them when freed.

    A block from a fresh mapping costs a page fault per 4 KiB on its first write, and the upscaler's temporal layers
    allocate tensors of 64 MB at every layer. Measured on the 2-core CPU, the shipped upscale stage (61 frames to
    128x128) took 5.4-5.7 s with this against 6.5-6.8 s without (three processes each, interleaved); its output is
    unchanged. torch allocates with posix_memalign, which glibc does not always serve from the kept memory, so some
    tensors still fault. The heap stays at its peak size until the process exits, which a sampling command does soon
    after. Returns False, changing nothing, where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
