"""What a metric is, what it reads, and how the worker asks for every metric of a row.

A metric is a registered instance of `Metric`. Its `stats` turn a batch of samples into
per-sample arrays (leading axis N) and its `combine` turns such arrays into the row's numbers,
so the point estimate is combine(stats) and a bootstrap interval resamples the N rows of the
stats (flowbench/metrics/bootstrap.py) without recomputing anything per sample. A metric
whose estimate does not split per sample (MAUVE) overrides `compute` and reports its own
interval.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from flowbench.config import SuiteError
from flowbench.metrics.floors import floor_columns


class MetricError(SuiteError):
    """A metric that cannot run on this corpus or with these parameters (one line)."""


@dataclass
class Samples:
    """One row's samples and what scores them.

    tokens: (N, L) generator ids; nll, mask: (N, M) the judge's per-token NLL and scored entries;
    corpus: the corpus the samples imitate (decode, held-out splits, exact marginals);
    seed: fixes every random choice of the metrics (bootstrap, k-means)."""

    tokens: torch.Tensor
    nll: torch.Tensor | None
    mask: torch.Tensor | None
    corpus: Any = None
    judge: Any = None
    seed: int = 0
    cache_dir: Any = None
    _texts: list[str] | None = field(default=None, repr=False)

    def texts(self) -> list[str]:
        if self._texts is None:
            self._texts = [self.corpus.decode(row) for row in self.tokens]
        return self._texts


class Metric:
    """Base of every metric. Subclasses set the class variables and implement `stats` and
    `combine` (or `compute`). `params` are the suite's `eval.metric_params[<name>]`."""

    name: str = "metric"
    higher_is_better: ClassVar[bool]
    version: ClassVar[int] = 1  # bump when values change: it enters every row key
    columns: ClassVar[tuple[str, ...]] = ()  # every column it writes, in leaderboard order
    interval: ClassVar[tuple[str, ...]] = ()  # columns that get <col>_lo / <col>_hi
    floors: ClassVar[tuple[str, ...]] = ()  # columns that get <col>_floor(_lo, _hi): true data at N
    needs_exact: ClassVar[bool] = False  # needs a corpus with a known likelihood (the embedded language)
    needs_judge: ClassVar[bool] = False  # reads the judge's NLL
    bounds: ClassVar[tuple[float, float]] = (0.0, float("inf"))  # range of the interval columns

    def check(self, corpus, params: dict) -> None:
        """Raise MetricError (one line) if this metric cannot run on `corpus` with `params`."""
        if self.needs_exact and not getattr(corpus, "exact", False):
            raise MetricError(f"metric {self.name!r} needs a corpus with known n-gram marginals; "
                              f"corpus {getattr(corpus, 'name', corpus)!r} has none")
        if params:
            raise MetricError(f"eval.metric_params.{self.name}: takes no parameters {sorted(params)}")

    def stats(self, samples: Samples, params: dict) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def combine(self, stats: dict[str, np.ndarray], samples: Samples, params: dict) -> dict[str, float]:
        raise NotImplementedError

    def compute(self, samples: Samples, params: dict | None = None) -> dict[str, Any]:
        """The row's columns: point estimates and the bootstrap interval of `interval`."""
        from flowbench.metrics.bootstrap import bootstrap_interval

        params = params or {}
        stats = self.stats(samples, params)
        row = self.combine(stats, samples, params)
        if self.interval:
            row.update(bootstrap_interval(lambda s: self.combine(s, samples, params), stats,
                                          columns=self.interval, seed=samples.seed, bounds=self.bounds))
        if self.floors:
            row.update(floor_columns(self, samples, params))
        return row

    def all_columns(self) -> tuple[str, ...]:
        return (self.columns + tuple(f"{c}_{end}" for c in self.interval for end in ("lo", "hi"))
                + tuple(f"{c}_floor{end}" for c in self.floors for end in ("", "_lo", "_hi")))


class FunctionMetric(Metric):
    """A plain function fn(*, tokens, nll, mask) -> dict, registered with `@metric(...)` (the
    way entries from outside the package add one): no interval, no corpus check."""

    def __init__(self, fn: Callable[..., dict[str, float]], *, higher_is_better: bool, version: int = 1):
        self.fn, self.higher_is_better, self.version = fn, higher_is_better, version

    def check(self, corpus, params):
        if params:
            raise MetricError(f"eval.metric_params.{self.name}: takes no parameters {sorted(params)}")

    def compute(self, samples, params=None):
        return self.fn(tokens=samples.tokens, nll=samples.nll, mask=samples.mask)

    def __call__(self, **kw) -> dict[str, float]:
        return self.fn(**kw)


def metric(name: str, *, higher_is_better: bool, version: int = 1):
    """Register a plain function as a metric (see FunctionMetric); returns the function."""
    from flowbench.registry import METRICS

    def wrap(fn):
        entry = FunctionMetric(fn, higher_is_better=higher_is_better, version=version)
        entry.name = name
        METRICS.register(name)(entry)
        return fn

    return wrap


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: register one instance of a Metric subclass under `cls.name`."""
    from flowbench.registry import METRICS

    METRICS.register(cls.name)(cls())
    return cls
