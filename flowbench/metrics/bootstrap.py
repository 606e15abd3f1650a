"""Percentile bootstrap intervals over samples, and over seeds.

Over samples: the N rows of a metric's per-sample stats are drawn with replacement B times
(a fixed seed), the metric is recombined on each draw, and the 2.5% and 97.5% quantiles of
the replicates, shifted by the bootstrap's estimate of the plug-in bias (mean of the
replicates minus the estimate), are the interval. Without the shift a plug-in KL or MAUVE,
whose resampled histograms are always rougher than the sample's, gets an interval that
misses its own estimate. This is the sampling error of one run of a generator; it does
not include the variation between training seeds, which `seed_interval` covers where a suite
has several seeds.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

REPLICATES = 1000
LEVEL = 0.95


def bootstrap_interval(combine: Callable[[dict[str, np.ndarray]], dict[str, float]],
                       stats: dict[str, np.ndarray], *, columns: tuple[str, ...], seed: int,
                       replicates: int = REPLICATES, level: float = LEVEL,
                       bounds: tuple[float, float] = (-np.inf, np.inf)) -> dict[str, float]:
    """{<col>_lo, <col>_hi} for each of `columns`; stats hold arrays with a leading axis N."""
    n = len(next(iter(stats.values())))
    point = combine(stats)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
    draws = {c: np.empty(replicates) for c in columns}
    for b in range(replicates):
        idx = rng.integers(0, n, n)
        out = combine({k: v[idx] for k, v in stats.items()})
        for c in columns:
            draws[c][b] = out[c]
    row = {}
    for c in columns:
        row[f"{c}_lo"], row[f"{c}_hi"] = shifted_interval(draws[c], point[c], level=level, bounds=bounds)
    return row


def shifted_interval(draws: np.ndarray, point: float, *, level: float = LEVEL,
                     bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, recentred on the point estimate and kept
    inside the metric's range (`bounds`: KL >= 0, MAUVE in [0, 1])."""
    tail = (1 - level) / 2
    bias = float(np.mean(draws)) - point
    lo, hi = np.quantile(draws, [tail, 1 - tail]) - bias
    return float(np.clip(lo, *bounds)), float(np.clip(hi, *bounds))


def seed_interval(values: np.ndarray, *, seed: int = 0, replicates: int = REPLICATES,
                  level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi) of per-seed values: the mean over seeds with a bootstrap over seeds."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    means = values[rng.integers(0, len(values), (replicates, len(values)))].mean(1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(values.mean()), float(lo), float(hi)
