"""Keep freed host memory in the process, so the sampler's (B, L, V) tensors are not paged in anew.

glibc's malloc serves a request above its mmap threshold (128 KiB, raised on the fly to at most
32 MiB) with a fresh mmap, and returns heap memory to the OS once more than twice that is free
at the top. A (B, L, V) float64 tensor at the evaluation size is 16 MiB, and a sampler step
allocates several, so each step paged them in again: a minor page fault per 4 KiB, zeroed by the
kernel. Measured at batch 256 (L = 32, V = 256, one thread): up to about 13800 faults per sample
batch, 15 ms of system time in a batch of 115 ms; about none after `retain_freed_memory`
(per family: docs/performance.md).

It sets the mmap threshold to its ceiling (32 MiB), returns memory to the OS only above 1 GiB
of free heap, and grows the heap 64 MiB at a time. The numbers computed do not change: only
where the bytes come from. A no-op where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 2**20   # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30
TOP_PAD = 64 * 2**20


def glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def retain_freed_memory() -> bool:
    """Tune this process's malloc (see the module docstring); True if glibc accepted every setting."""
    libc = glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
