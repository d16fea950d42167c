"""Keep freed memory in the process while training, so a step reuses it instead of faulting it in anew.

glibc's malloc hands every block above its mmap threshold (128 KiB at first, raised as big
blocks are freed, up to 32 MiB) back to the kernel when it is freed, and trims the free top of
its heap. A training step frees its activations and allocates the same sizes again on the next
step, so each step asks the kernel for fresh pages, which the kernel zeroes one 4 KiB page
fault at a time: cifar10-airbench at batch 1024 took 200,000-260,000 page faults and 0.5-0.6 s
of kernel time a step (2.5 s) that way, and none with both thresholds at 1 GiB
(docs/benchmarks.md, Allocator).

The price is fragmentation: memory the heap keeps cannot go back to the kernel, nor always
serve a block of another size. So the loop keeps freed memory only for its training epochs,
hands back what is free before and after each (loading the data set, and the evaluation
passes, free blocks of other sizes), and leaves glibc at the thresholds its own adjustment
reaches in between. This is the idea behind the jemalloc settings that
``torch.backends.xeon.run_cpu`` preloads (freed pages never decay back to the kernel), without
preloading another allocator.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Iterator
from contextlib import contextmanager

KEEP_BELOW = 1 << 30
"""Bytes: while training, blocks smaller than this come from, and go back to, malloc's heap."""
GLIBC_ADJUSTED = (32 << 20, 64 << 20)
"""glibc's mmap and trim thresholds once its dynamic adjustment has seen a large block freed
(DEFAULT_MMAP_THRESHOLD_MAX, and twice it): the settings outside the training epochs."""
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""mallopt parameter numbers, from glibc's malloc.h."""


def glibc() -> ctypes.CDLL | None:
    """The process's C library where it is glibc (Linux), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    return libc


def set_thresholds(libc: ctypes.CDLL, mmap_bytes: int, trim_bytes: int) -> bool:
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes)
    return bool(mmap_set) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_bytes))


@contextmanager
def freed_memory_kept(enabled: bool = True) -> Iterator[bool]:
    """Within, glibc's malloc keeps freed blocks under ``KEEP_BELOW`` for reuse; before and after,
    what is free goes back to the kernel. Yields whether it took effect (False, changing
    nothing, when not ``enabled`` or where the C library is not glibc)."""
    libc = glibc() if enabled else None
    if libc is None:
        yield False
        return
    libc.malloc_trim(0)
    kept = set_thresholds(libc, KEEP_BELOW, KEEP_BELOW)
    try:
        yield kept
    finally:
        set_thresholds(libc, *GLIBC_ADJUSTED)
        libc.malloc_trim(0)
