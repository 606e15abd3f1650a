"""Timing, and the replay of a sampler's backbone calls on their own (per-phase memory:
flowbench/measuring.py).

Times are medians of `repeats` runs after one untimed warm-up; each median comes with the
relative spread (max - min) / median of its runs, so a reader sees how noisy a shared CPU was.
"""
from __future__ import annotations

import contextvars
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from flowbench.measuring import sync


@dataclass(frozen=True)
class Timing:
    median_s: float
    spread: float  # (max - min) / median over the repeats
    repeats: int


def clock_of(name: str) -> Callable[[], float]:
    """The clock a measure reads: "wall" (perf_counter) or "cpu" (the process's CPU time); looked
    up at each call, so a test's fake clock is the one read."""
    return time.process_time if name == "cpu" else time.perf_counter


def time_call(fn: Callable[[], object], *, repeats: int, device: torch.device, warmup: int = 1,
              number: int = 1, clock: str = "wall") -> Timing:
    """Median time of one fn() over `repeats` runs after `warmup` untimed ones; each run calls
    fn `number` times in a row and counts the mean. clock: wall time, or the process's CPU time
    (`Bench.clock`)."""
    now = clock_of(clock)
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        sync(device)
        t0 = now()
        for _ in range(number):
            fn()
        sync(device)
        runs.append((now() - t0) / number)
    med = statistics.median(runs)
    return Timing(median_s=med, spread=(max(runs) - min(runs)) / med if med > 0 else 0.0, repeats=repeats)


def calls_per_run(fn: Callable[[], object], *, min_run_s: float, device: torch.device) -> int:
    """How many calls of fn fill one timed run of at least min_run_s, from one timed call (fn is
    warm). A single call of a millisecond is at the mercy of the scheduler's tick on a shared CPU
    (the batch-1 overhead of one run read 0.77, faster than the bare forwards it contains); a
    run of many such calls averages that out, as timeit's autorange does."""
    if min_run_s <= 0:  # one call per run whatever it lasts: no call spent to find out
        return 1
    one = time_call(fn, repeats=1, device=device, warmup=0).median_s
    return max(1, math.ceil(min_run_s / one)) if one > 0 else 1


class RecordedCalls:
    """The network, recording every call a sampler makes so the calls can be replayed alone.

    Tensor arguments are cloned at call time. A stateful argument (an object that is not a tensor,
    such as a KV cache the model extends in place) is replayed with a fresh instance of its type,
    fed the same calls in the same order, so the replay does the network's work and nothing else.
    Each call replays in a copy of the context variables it was made in: a sampler that sets how
    the network computes for its calls (a family's input precision) gets the same work replayed."""

    def __init__(self, model: Callable):
        self.model, self.calls = model, []

    def __call__(self, *args, **kwargs):
        self.calls.append((contextvars.copy_context(), tuple(_freeze(a) for a in args),
                           {k: _freeze(v) for k, v in kwargs.items()}))
        return self.model(*args, **kwargs)

    @torch.inference_mode()
    def replay(self) -> None:
        fresh: dict[int, object] = {}
        for context, args, kwargs in self.calls:
            context.run(self.model, *(_thaw(a, fresh) for a in args),
                        **{k: _thaw(v, fresh) for k, v in kwargs.items()})


@dataclass(frozen=True)
class _State:
    kind: type
    ident: int


def _freeze(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return _State(type(value), id(value))


def _thaw(value, fresh: dict):
    if isinstance(value, _State):
        if value.ident not in fresh:
            fresh[value.ident] = value.kind()
        return fresh[value.ident]
    return value
