"""The bench's configuration (`suites/bench.yaml`): typed, frozen, unknown keys rejected."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from flowbench.config import BackboneConfig, Frozen, SuiteError, read_mapping, validate


class BenchEntry(Frozen):
    """One contestant: a family with its parameters and the sampler timed for it.

    nfe: the NFE values of the latency grid; none for a sampler whose NFE is fixed (AR: L)."""

    family: str
    params: dict[str, Any] = {}
    sampler: str
    sampler_params: dict[str, Any] = {}
    nfe: list[PositiveInt] | None = None
    label: str | None = None  # the name in tables and plots (default family/sampler, +compile)
    # sample through torch.compile(network); timed for latency only, since every new shape
    # compiles first (tens of seconds on a CPU), untimed in the latency warm-up
    compile: bool = False

    @property
    def name(self) -> str:
        return self.label or f"{self.family}/{self.sampler}" + ("+compile" if self.compile else "")


class Scaling(Frozen):
    """Sampling time as L doubles and as V grows, at one batch size and NFE."""

    seq_lens: list[PositiveInt] = [32, 64, 128, 256, 512]
    vocab_sizes: list[PositiveInt] = [256, 1024, 4096]
    batch_size: PositiveInt = 4
    nfe: PositiveInt = 1


class VocabSweep(Frozen):
    """Every entry's training step and its sampling at a few NFE as V grows (L, backbone and batch
    fixed): time and peak memory at each V (flowbench/bench/vocab.py)."""

    vocab_sizes: list[PositiveInt] = [256, 1024, 4096, 16384]
    nfe: list[PositiveInt] = [1, 64]   # for the entries with an NFE grid; AR samples in L calls
    sample_batch: PositiveInt = 16     # sequences per timed sample batch


class Bench(Frozen):
    name: str = "bench"
    backbone: BackboneConfig = BackboneConfig()
    seq_len: PositiveInt = 32
    vocab_size: PositiveInt = 256
    batch_sizes: list[PositiveInt] = [1, 16, 256]
    eval_batch: PositiveInt = 256          # the overhead ratio is measured at batch 1 and at this one
    overhead_nfe: list[PositiveInt] = [1, 4]
    train_batch: PositiveInt = 64
    train_steps: PositiveInt = 5           # timed optimiser steps per family (after one warm-up)
    repeats: PositiveInt = Field(3, description="timed runs per measurement; the median is reported")
    # a timed run of a sampler (or of its replayed forwards) repeats the call until it lasts this
    # long: at batch 1 one call is a millisecond or two (measure.calls_per_run)
    min_run_s: float = Field(0.1, ge=0.0)
    threads: PositiveInt = 1               # torch threads: one, as a training worker runs
    # the training and latency measures' clock: wall time, or the process's CPU time, which on a machine shared
    # with other work leaves out the time the scheduler gives to others (one thread: the same
    # seconds on an idle machine, less cache contention)
    clock: Literal["wall", "cpu"] = "wall"
    device: str = "cpu"
    seed: int = 0
    entries: list[BenchEntry]
    scaling: Scaling | None = Scaling()
    vocab_sweep: VocabSweep | None = None  # none: the "vocab" measure is not taken
    # the measures to take (default all; scaling also needs `scaling` set): e.g. [train] times
    # only the training phases against the bare backbone step (suites/bench_train.yaml); vocab
    # also needs `vocab_sweep` set (suites/bench_vocab.yaml)
    measures: list[Literal["overhead", "latency", "train", "memory", "scaling", "vocab"]] = [
        "overhead", "latency", "train", "memory", "scaling", "vocab"]


def load_bench(path: str | Path) -> Bench:
    data = read_mapping(path, kind="bench", shape=f"a bench file is a mapping with keys {', '.join(Bench.model_fields)}")
    return validate(Bench, data, "")  # type: ignore[return-value]
