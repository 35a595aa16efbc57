"""Keep freed memory in the process heap during training (glibc only).

A training step on CPU allocates and frees the same large buffers every step (gradients,
weight-decayed gradients, kernel-gradient scatter buffers of several MB).  glibc serves
blocks above its mmap threshold with fresh mmap() calls and returns them on free, so every
step pays page faults to zero new pages: a sweep of 60 short runs showed ~190 million minor
page faults.  Raising the mmap threshold (to glibc's 32 MiB maximum on 64-bit) and the trim
threshold makes those buffers come back from the heap instead.  Measured (ResNet-18, 28 px,
bf16, one thread): 0.125 -> 0.105 s per training step.  This is what PyTorch's CPU tuning
guides get by preloading jemalloc/tcmalloc; mallopt() needs no preload and no new dependency.
Memory is not returned to the OS until the process ends, which suits a training process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 1024 * 1024 * 1024

_done = False


def keep_freed_memory() -> bool:
    """Tune glibc malloc for training (once per process); False where not glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _done = ok
    return ok
