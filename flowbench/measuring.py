"""What a timed phase needs from the device, written once for the evaluation worker, the bare
step and the bench: `sync` (wait for a device's queued work before a clock is read) and
`PhaseMemory` (the peak memory of one phase of the process).
"""
from __future__ import annotations

import os
import resource
import threading
import time
from typing import Literal

import torch

from flowbench.allocator import glibc


def sync(device: torch.device) -> None:
    """Wait for the work queued on a GPU (a CPU computes before it returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_PAGE = os.sysconf("SC_PAGE_SIZE")
_LIBC = glibc()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PhaseMemory:
    """Peak memory of one phase (a training or sampling loop): `with PhaseMemory(device) as m:`,
    or `m = PhaseMemory(device).start()` ... `m.stop()`; then `m.mb`.

    On CUDA: the peak allocated above what was live at the start, so what was resident before
    (a judge's weights, earlier rows) does not count. On the CPU the allocator keeps no peak:
    cpu="poll" (default) polls the resident set every `interval_s` in a thread, freed heap first
    returned to the OS (malloc_trim) so the phase starts from what is live, and reports its growth
    (tensors plus allocator slack, to about the interval's resolution); cpu="process" reads the
    process's peak resident set at the stop (the OS keeps no per-phase peak), with no thread
    beside a timed loop."""

    def __init__(self, device: torch.device, *, cpu: Literal["poll", "process"] = "poll",
                 interval_s: float = 1e-3):
        if cpu not in ("poll", "process"):
            raise ValueError(f"PhaseMemory: cpu must be 'poll' or 'process', got {cpu!r}")
        self.device, self.cpu, self.interval_s = device, cpu, interval_s
        self.peak = self.base = 0
        self._thread = None

    def start(self) -> "PhaseMemory":
        if self.device.type == "cuda":
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.cpu == "poll":
            if _LIBC is not None:
                _LIBC.malloc_trim(0)
            self.base = self.peak = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval_s)

    def stop(self) -> float:
        """End the phase; its peak in MB."""
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self.cpu == "process":
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())
        return self.mb

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def mb(self) -> float:
        return max(0, self.peak - self.base) / 2**20
